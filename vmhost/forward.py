"""Run a rootless command inside a machine: ``rootless --connection NAME ...``.

``forward(connection, argv, env)`` (called by rootless.cli.main) starts the
machine if needed, then runs ``rootless ARGV`` in it over SSH with stdin,
stdout, stderr, the TTY and the exit status passed through.

What the forwarding adds, decided by the pure ``plan_forward``:

* ``-p [IP:]HOSTPORT:PORT`` of run/create: the guest publishes HOSTPORT and
  QEMU forwards the host's IP:HOSTPORT to it (QMP ``hostfwd_add``), so the
  port answers on the host as it would without a VM. A host port already
  taken is an error before anything runs.
* ``-P`` and ``-p [IP::]PORT`` of run (the guest's runtime picks the port):
  the ports the guest really published are read back from it
  (``vmhost.guestports``, over the SSH master: the ``run`` carries a label
  ``rootless.machine.forward=TOKEN`` to be found by) and the host's same
  port is forwarded to each; one taken on the host is a warning (the
  container runs already).
* The forwards of a foreground ``run`` (and of a failed command) are removed
  when it ends; those of ``run -d`` when the container stops (a detached
  ``vmhost.portwatch`` waits for it), those of ``create`` when the machine
  stops.
* image references to a registry on the host's loopback
  (``localhost:5000/img``, ``127.0.0.1:5000/img``): the same address works
  in the guest through an SSH reverse forward for the command's duration.
* the working directory, when it is under the shared home (same path in
  the guest), so relative paths and build contexts work; a bind mount of a
  host path outside the shared home is refused with the fix.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field

from rootless.errors import UsageError

# run/create flags that take no value (everything else starting with "-" takes one)
_BOOL_LONG = {
    "--detach", "--rm", "--interactive", "--tty", "--publish-all", "--privileged", "--init", "--read-only",
    "--quiet", "--no-healthcheck", "--help", "--sig-proxy", "--oom-kill-disable", "--disable-content-trust",
    "--userns-keep-id", "--replace", "--no-hosts", "--rootfs",
}
_BOOL_SHORT = set("ditPqh")
_CONTAINER_CMDS = {"run", "create"}
_LOOPBACK_REF = re.compile(r"^(?:[a-z]+://)?(localhost|127\.0\.0\.1)(?::(\d{1,5}))(?:/|$)")


@dataclass(frozen=True)
class ForwardPlan:
    remote_argv: tuple[str, ...]
    tty: bool = False                   # the command asks for a TTY (-t)
    stdin: bool = True                  # the command reads stdin
    ports: tuple[tuple[str, str, int, int], ...] = ()   # (proto, host ip, host port, guest port)
    keep_ports: bool = False            # the container outlives the command (run -d, create)
    reverse: tuple[tuple[str, int], ...] = ()           # (host name, port) of loopback registries
    cwd: str = ""                       # cd here in the guest ("" = the guest's default)
    errors: tuple[str, ...] = field(default=())
    dynamic: tuple[tuple[str, str, int], ...] = ()   # (proto, host ip, container port; 0 = any: -P) the guest picks
    track: bool = False                 # a run that publishes ports: label it, find it, forward what it got
    label_at: int = 0                   # where the label goes in remote_argv


def _command(argv: list[str]) -> tuple[str, int]:
    """The effective command word and the index of its first argument."""
    if not argv:
        return "", 0
    if argv[0] == "container" and len(argv) > 1:
        return argv[1], 2
    if argv[0] == "image" and len(argv) > 1:
        return argv[1], 2
    return argv[0], 1


def parse_publish(value: str) -> list[tuple[str, str, int, int]] | None:
    """``[IP:][HOST:]CONTAINER[/proto]`` -> [(proto, ip, host port, host port)...];
    None when no host port is given (the guest picks one: not forwardable)."""
    proto = "tcp"
    if "/" in value:
        value, proto = value.rsplit("/", 1)
        proto = proto.lower()
        if proto not in ("tcp", "udp"):
            raise UsageError(f"invalid protocol in port {value}/{proto}", hint="use tcp or udp")
    ip = ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise UsageError(f"invalid address in port {value!r}")
        ip = value[1:end]
        value = value[end + 2:]
        parts = value.split(":")
    else:
        parts = value.split(":")
        if len(parts) == 3:
            ip, parts = parts[0], parts[1:]
    if len(parts) == 1 or not parts[0]:
        return None
    host, _container = parts[0], parts[1]
    try:
        if "-" in host:
            a, b = (int(x) for x in host.split("-", 1))
        else:
            a = b = int(host)
    except ValueError:
        raise UsageError(f"invalid host port in -p {value!r}", hint="e.g. -p 8080:80") from None
    if not (0 < a <= b <= 65535):
        raise UsageError(f"invalid host port range in -p {value!r}")
    return [(proto, ip, p, p) for p in range(a, b + 1)]


def dynamic_publish(value: str) -> list[tuple[str, str, int]]:
    """``[IP::]PORT[-PORT][/proto]`` (no host port: the runtime picks) -> [(proto, host ip, port)...]."""
    proto = "tcp"
    if "/" in value:
        value, proto = value.rsplit("/", 1)
        proto = proto.lower()
    ip = ""
    if value.startswith("["):
        end = value.find("]")
        ip, value = value[1:end], value[end + 2:]
        parts = value.split(":")
    else:
        parts = value.split(":")
        if len(parts) == 3:
            ip, parts = parts[0], parts[1:]
    if len(parts) == 2 and parts[0]:
        return []
    c = parts[-1]
    try:
        a, b = (int(x) for x in c.split("-", 1)) if "-" in c else (int(c), int(c))
    except ValueError:
        raise UsageError(f"invalid port in -p {value!r}", hint="e.g. -p 80 or -p 8080:80") from None
    if not (0 < a <= b <= 65535):
        raise UsageError(f"invalid port range in -p {value!r}")
    return [(proto, ip, p) for p in range(a, b + 1)]


def forwards_for(plan: ForwardPlan, published: list[tuple[str, int, int]]) -> list[tuple[str, str, int, int]]:
    """Host forwards for the ports the guest published, ``[(proto, host port, container port)]``:
    the host's same port, on the address the command asked for (pure)."""
    explicit = {(p, hp): ip for p, ip, hp, _g in plan.ports}
    out = []
    for proto, hport, cport in published:
        if (proto, hport) in explicit:
            ip = explicit[(proto, hport)]
        else:
            ips = [ip for p, ip, c in plan.dynamic if p == proto and c in (cport, 0)]
            if not ips:
                continue
            ip = ips[0]
        fw = (proto, ip, hport, hport)
        if fw not in out:
            out.append(fw)
    return out


def with_token(plan: ForwardPlan, token: str) -> ForwardPlan:
    """The plan whose run carries the label the guest finds it by."""
    from vmhost.guestports import LABEL

    argv = list(plan.remote_argv)
    argv[plan.label_at:plan.label_at] = ["--label", f"{LABEL}={token}"]
    from dataclasses import replace

    return replace(plan, remote_argv=tuple(argv))


def guest_publish(value: str) -> str:
    """The -p value the guest gets: without the host IP (QEMU forwards to the
    guest's own address, so the guest must publish on every address)."""
    proto = ""
    if "/" in value:
        value, proto = value.rsplit("/", 1)
        proto = "/" + proto
    if value.startswith("["):
        value = value[value.find("]") + 2:]
    else:
        parts = value.split(":")
        if len(parts) == 3:
            value = ":".join(parts[1:])
    if value.startswith(":"):
        value = value[1:]
    return value + proto


def _bind_source(spec_: str) -> str | None:
    """The host path of a -v value (None for named volumes)."""
    src = spec_.split(":", 1)[0]
    if src.startswith(("/", "./", "../", "~")) or src in (".", ".."):
        return src
    return None


def _mount_source(value: str) -> str | None:
    opts = dict(kv.split("=", 1) if "=" in kv else (kv, "") for kv in value.split(","))
    if opts.get("type", "volume") != "bind":
        return None
    return opts.get("source") or opts.get("src")


def plan_forward(argv: list[str], cwd: str, share: str, home: str = "") -> ForwardPlan:
    """How to run ``rootless ARGV`` in the machine (pure)."""
    cmd, first = _command(argv)
    remote = list(argv)
    tty = False
    stdin = True
    ports: list[tuple[str, str, int, int]] = []
    dynamic: list[tuple[str, str, int]] = []
    errors: list[str] = []
    detach = False
    in_share = bool(share) and (cwd == share or cwd.startswith(share.rstrip("/") + "/"))

    def host_path(p: str) -> str:
        p = os.path.expanduser(p) if p.startswith("~") and home == "" else (
            home + p[1:] if p.startswith("~") else p)
        return os.path.normpath(os.path.join(cwd, p))

    def check_shared(p: str, what: str) -> None:
        hp = host_path(p)
        if not share:
            errors.append(f"{what} {hp}: the machine shares no directory with the host")
        elif not (hp == share or hp.startswith(share.rstrip("/") + "/")):
            errors.append(f"{what} {hp} is not shared with the machine (only {share} is)")

    if cmd in _CONTAINER_CMDS or cmd == "exec":
        stdin = False
        i = first
        while i < len(remote):
            a = remote[i]
            if a == "--" or not a.startswith("-") or a == "-":
                break
            name, eq, val = a.partition("=")
            takes_value = False
            if a.startswith("--"):
                if name in ("--publish", "--volume", "--mount"):
                    if not eq:
                        if i + 1 >= len(remote):
                            break
                        val = remote[i + 1]
                    if name == "--publish" and cmd != "exec":
                        ports += parse_publish(val) or []
                        dynamic += dynamic_publish(val)
                        val = guest_publish(val)
                    elif name == "--volume":
                        src = _bind_source(val)
                        if src:
                            check_shared(src, "bind mount source")
                    elif name == "--mount":
                        src = _mount_source(val)
                        if src:
                            check_shared(src, "bind mount source")
                    if eq:
                        remote[i] = f"{name}={val}"
                    else:
                        remote[i + 1] = val
                        i += 1
                    i += 1
                    continue
                if name == "--tty":
                    tty = tty or val.lower() not in ("false", "0")
                elif name == "--interactive":
                    stdin = stdin or val.lower() not in ("false", "0")
                elif name == "--detach":
                    detach = True
                elif name == "--publish-all" and cmd != "exec":
                    dynamic.append(("tcp", "", 0))
                    dynamic.append(("udp", "", 0))
                takes_value = not eq and name not in _BOOL_LONG
            else:
                flags = a[1:]
                j = 0
                while j < len(flags):
                    c = flags[j]
                    if c in _BOOL_SHORT:
                        tty = tty or c == "t"
                        stdin = stdin or c == "i"
                        detach = detach or c == "d"
                        if c == "P" and cmd != "exec":
                            dynamic += [("tcp", "", 0), ("udp", "", 0)]
                        j += 1
                        continue
                    rest = flags[j + 1:]
                    if c in ("p", "v"):
                        if rest:
                            val, at_next = rest, False
                        elif i + 1 < len(remote):
                            val, at_next = remote[i + 1], True
                        else:
                            break
                        if c == "p" and cmd != "exec":
                            ports += parse_publish(val) or []
                            dynamic += dynamic_publish(val)
                            val = guest_publish(val)
                        elif c == "v":
                            src = _bind_source(val)
                            if src:
                                check_shared(src, "bind mount source")
                        if at_next:
                            remote[i + 1] = val
                            i += 1
                        else:
                            remote[i] = "-" + flags[:j + 1] + val
                    else:
                        takes_value = not rest
                    break
            i += 1 + (1 if takes_value else 0)
    reverse = []
    for a in remote:
        m = _LOOPBACK_REF.match(a)
        if m:
            r = (m.group(1), int(m.group(2)))
            if r not in reverse and 0 < r[1] <= 65535:
                reverse.append(r)
    if cmd in ("load", "import", "login", "build", "push", "cp", "save"):
        stdin = True
    return ForwardPlan(remote_argv=tuple(remote), tty=tty, stdin=stdin, ports=tuple(ports),
                       keep_ports=(cmd == "run" and detach) or cmd == "create",
                       reverse=tuple(reverse), cwd=cwd if in_share else "", errors=tuple(errors),
                       dynamic=tuple(dynamic), track=cmd == "run" and bool(ports or dynamic), label_at=first)


def remote_command(plan: ForwardPlan) -> str:
    # vmhost.guestrun: rootless ARGV, ended when this side goes away (see there)
    cmd = shlex.join(["python3", "-m", "vmhost.guestrun", *plan.remote_argv])
    if plan.cwd:
        return f"cd {shlex.quote(plan.cwd)} 2>/dev/null; exec {cmd}"
    return f"exec {cmd}"


def run_passthrough(argv: list[str], *, stdin_null: bool = False) -> int:
    """Run ``argv`` (ssh) with our stdio; its exit status (128+N when killed by N).

    Ctrl-C reaches ssh from the terminal (same process group); here it is
    only noted, so that an ssh ended by it gives 130 as ``docker run`` does,
    not ssh's 255. SIGTERM/SIGHUP sent to us are passed on to ssh.
    """
    import signal
    import subprocess

    got: list[int] = []
    proc = None

    def note(sig, _frame):
        got.append(sig)
        if sig not in (signal.SIGINT, getattr(signal, "SIGQUIT", None)) and proc is not None:
            try:
                proc.send_signal(sig)
            except OSError:
                pass

    sigs = [getattr(signal, n) for n in ("SIGINT", "SIGQUIT", "SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, n)]
    old = {s: signal.signal(s, note) for s in sigs}
    try:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if stdin_null else None)
        except OSError as e:
            from rootless.errors import HelperFailed

            raise HelperFailed(f"run {argv[0]}", None, e.strerror or str(e)) from None
        while True:
            try:
                rc = proc.wait()
                break
            except InterruptedError:
                continue
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if rc < 0:
        return 128 - rc
    if rc == 255 and got:
        return 128 + got[0]
    return rc


def forward(connection: str, argv: list[str], env: dict[str, str]) -> int:
    """``rootless --connection NAME ARGV...``: run ARGV in machine NAME."""
    from rootless.config import load_config
    from rootless.errors import MachineError
    from rootless.report import make_reporter
    from vmhost.machine import Machines
    from vmhost.spec import check_name

    check_name(connection)
    config = load_config(env)
    reporter = make_reporter(sys.stderr, tty=_isatty(sys.stderr))
    ms = Machines(config, env, reporter)
    spec = ms.spec(connection)
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    plan = plan_forward(argv, cwd, spec.home, env.get("HOME", ""))
    if plan.errors:
        raise MachineError(plan.errors[0], hint=f"put it under {spec.home} (shared with the machine at the same "
                                                f"path), or work inside it: rootless machine ssh {connection}")
    st = ms.start(connection, if_needed=True)
    if spec.home and st.share != spec.home:
        # the guest could not mount the share (a cloud image's kernel without 9p)
        plan = plan_forward(argv, cwd, st.share, env.get("HOME", ""))
        if plan.errors:
            raise MachineError(f"{plan.errors[0]} (its kernel cannot mount {spec.home})",
                               hint=f"copy it into the machine (rootless machine ssh {connection}) or use an image "
                                    "whose kernel has 9p (e.g. Debian's generic cloud image)")
    added = ms.add_forwards(connection, list(plan.ports))
    token = ""
    if plan.track:
        import secrets

        token = secrets.token_hex(8)
        plan = with_token(plan, token)
    poller = None
    try:
        extra = []
        for host, port in plan.reverse:
            extra += ["-R", f"{host}:{port}:{host}:{port}"]
        tty = plan.tty and sys.stdin.isatty()
        argv_ssh = ms.ssh_argv(connection, state=st, tty=tty, extra=extra) + ["--", remote_command(plan)]
        if token and plan.dynamic and not plan.keep_ports:
            poller = _PortPoller(ms, connection, st, plan, token)
            poller.start()
        rc = run_passthrough(argv_ssh, stdin_null=not plan.stdin and not tty)
    except BaseException:
        if poller is not None:
            added += poller.finish()
        ms.remove_forwards(connection, added)
        raise
    if poller is not None:
        added += poller.finish()
    if token and plan.keep_ports and rc == 0:
        # run -d: the container runs; forward what it got, owned by it until it stops
        found = guest_ports(ms, connection, st, token)
        if found.get("id"):
            ms.add_forwards(connection, forwards_for(plan, [tuple(x) for x in found.get("ports", [])]),
                            owner=found["id"], skip_taken=True)
            spawn_portwatch(ms, connection, found["id"], env)
            return rc
    if added and not (plan.keep_ports and rc == 0):
        ms.remove_forwards(connection, added)
    return rc


def guest_ports(ms, name: str, state, token: str) -> dict:
    """What vmhost.guestports says in the guest about the run labelled ``token`` ({} when unknown)."""
    import json

    cp = ms.ssh_run(name, ["python3", "-m", "vmhost.guestports", token], state=state, check=False, timeout=120)
    try:
        out = json.loads((cp.stdout.strip().splitlines() or ["{}"])[-1])
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


class _PortPoller:
    """While a foreground ``run`` publishes ports the guest picks: find the
    container once it runs and forward its ports (removed by the caller when
    the command ends)."""

    def __init__(self, ms, name: str, state, plan: ForwardPlan, token: str):
        import threading

        self.ms, self.name, self.state, self.plan, self.token = ms, name, state, plan, token
        self.added: list[tuple[str, str, int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rootless-port-poller", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from rootless.errors import RootlessError

        delay = 0.2
        while not self.stop.is_set():
            try:
                found = guest_ports(self.ms, self.name, self.state, self.token)
                if found.get("running"):
                    fws = forwards_for(self.plan, [tuple(x) for x in found.get("ports", [])])
                    self.added = self.ms.add_forwards(self.name, fws, skip_taken=True)
                    return
                if found.get("status") in ("exited", "removing", "stopping"):
                    return          # it ran and ended before we saw it running
            except RootlessError:
                return
            self.stop.wait(delay)
            delay = min(delay * 1.5, 2.0)

    def finish(self) -> list[tuple[str, str, int, int]]:
        self.stop.set()
        self.thread.join(timeout=60)
        return list(self.added)


def spawn_portwatch(ms, name: str, cid: str, env: dict[str, str]) -> None:
    """A detached ``python -m vmhost.portwatch`` that removes ``cid``'s forwards when it stops."""
    from pathlib import Path

    from vmhost.detach import spawn_detached

    base = str(Path(__file__).resolve().parent.parent)   # where the vmhost package is
    penv = dict(env, PYTHONPATH=os.pathsep.join(x for x in (base, env.get("PYTHONPATH", "")) if x))
    # (the machine directory with a trailing separator: machine stop/rm find and end this process)
    spawn_detached([sys.executable, "-m", "vmhost.portwatch", str(ms.paths(name).dir) + os.sep, name, cid], penv,
                   log=ms.paths(name).dir / "portwatch.log")


def _isatty(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
