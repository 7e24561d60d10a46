"""Host side: ``python -m vmhost.portwatch MACHINE_DIR NAME CID``.

Started detached by ``rootless --connection NAME run -d -p ...``: waits
(``rootless wait CID`` in the guest, over the machine's SSH master) until the
container stops, then removes the host port forwards it owns. MACHINE_DIR is
on the command line so that ``machine stop``/``rm`` end this process with
the machine's others (the forwards go with the machine anyway).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m vmhost.portwatch MACHINE_DIR NAME CID", file=sys.stderr)
        return 2
    _mdir, name, cid = argv
    from rootless.config import load_config
    from rootless.errors import RootlessError
    from rootless.report import make_reporter
    from vmhost.machine import Machines

    env = dict(os.environ)
    ms = Machines(load_config(env), env, make_reporter(sys.stderr, tty=False))
    try:
        cp = ms.ssh_run(name, ["rootless", "wait", cid], check=False, timeout=None)
        print(f"container {cid[:12]} ended: wait {cp.returncode} {cp.stdout.strip()} {cp.stderr.strip()}",
              file=sys.stderr)
        ms.remove_forwards(name, owner=cid)
    except RootlessError as e:
        print(f"Error: {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
