"""Runs in the guest: ``python3 -m vmhost.guestports TOKEN`` prints, as JSON,
the container labelled ``rootless.machine.forward=TOKEN`` (what the host's
``--connection`` added to a ``run`` that publishes ports) with the ports the
guest's runtime really published::

    {"id": "...", "status": "running", "running": true, "ports": [["tcp", 34567, 80], ...]}
                                            (proto, host port, container port)

``{}`` when there is no such container (yet, or any more). One process in
the guest, read from the container store directly: cheaper under emulation
than ``rootless ps`` + ``rootless port``.
"""

from __future__ import annotations

import json
import os
import sys

LABEL = "rootless.machine.forward"


def find(token: str) -> dict:
    from rootless.config import load_config
    from rootless.runtime.state import ContainerStore

    for c in ContainerStore(load_config(dict(os.environ))).list():
        if dict(c.spec.labels).get(LABEL) != token:
            continue
        ports = []
        for p in (c.state.network or {}).get("ports") or []:
            try:
                ports.append([p.get("protocol", "tcp"), int(p["host_port"]), int(p["container_port"])])
            except (KeyError, TypeError, ValueError):
                continue
        return {"id": c.id, "status": c.state.status, "running": c.state.running, "ports": ports}
    return {}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m vmhost.guestports TOKEN", file=sys.stderr)
        return 2
    print(json.dumps(find(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
