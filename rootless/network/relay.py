"""A TCP relay for published ports: host sockets in, the container's loopback out, splice(2) between.

Used where it is at least as good as the backend's own forwarding:

* pasta, ports published on a loopback address (``-p 127.0.0.1:8080:80``):
  only local clients can connect, and pasta would show them to the server
  as 127.0.0.1 as well (its "spliced" path), so nothing is lost; the relay
  moves more bytes per second than pasta 2023 on the same machine;
* slirp4netns, every TCP port (slirp4netns's own forwarding copies through
  its user-space TCP stack; the server sees 10.0.2.2 either way).

The relay is a child of the container's monitor (it dies with it:
PR_SET_PDEATHSIG): it gets the listening sockets bound in the host's
network namespace, enters the container's user and network namespaces, and
for each client connects to 127.0.0.1:PORT (or [::1]) there. ``stop`` kills
it, which frees the host ports.
"""

from __future__ import annotations

import fcntl
import os
import threading

PIPE_SIZE = 1 << 20


class Splicer:
    """Bidirectional TCP relay between two connected sockets, one thread per direction (no copies)."""

    def __init__(self, a, b, on_done=None):
        self.a, self.b = a, b
        self.on_done = on_done
        self._left = 2
        self._lock = threading.Lock()
        for src, dst in ((a, b), (b, a)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:
        import socket

        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                fcntl.fcntl(w, 1031, PIPE_SIZE)  # F_SETPIPE_SZ
            except OSError:
                pass
            sfd, dfd = src.fileno(), dst.fileno()
            while True:
                n = os.splice(sfd, w, PIPE_SIZE, flags=1)  # SPLICE_F_MOVE (F_MORE measured no better)
                if n == 0:
                    break
                while n:
                    n -= os.splice(r, dfd, n, flags=1)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            os.close(r)
            os.close(w)
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self.a.close()
                self.b.close()
                if self.on_done is not None:
                    self.on_done(self)


def _serve(listeners: list, targets: list[tuple[str, int]]) -> None:
    import selectors
    import socket

    sel = selectors.DefaultSelector()
    for s, t in zip(listeners, targets):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, t)

    def connect(client, target):
        client.setblocking(True)
        fam = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        up = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        up.settimeout(10)
        try:
            up.connect(target)
        except OSError:
            up.close()
            client.close()   # nothing listens in the container: the client sees the connection closed
            return
        up.settimeout(None)
        for x in (client, up):
            try:
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        Splicer(client, up)

    while True:
        for key, _ in sel.select():
            for _ in range(16):
                try:
                    client, _addr = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                threading.Thread(target=connect, args=(client, key.data), daemon=True).start()


def start_relay(pid: int, mappings, sockets) -> int:
    """Fork the relay for container ``pid``: ``sockets`` (bound, listening, host side) -> loopback ports inside.

    Returns the relay's pid once it is in the container's namespaces and serving.
    """
    import signal

    from rootless import syscalls
    from rootless.errors import NetworkError

    targets = [("::1" if ":" in (m.host_ip or "") else "127.0.0.1", m.container_port) for m in mappings]
    keep = {s.fileno() for s in sockets}
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(r)
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                if fd > 2 and fd not in keep and fd != w:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            for ns, flag in (("user", syscalls.CLONE_NEWUSER), ("net", syscalls.CLONE_NEWNET)):
                fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino:
                        syscalls.setns(fd, flag)
                finally:
                    os.close(fd)
            os.write(w, b"1")
            os.close(w)
            _serve(list(sockets), targets)
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)
    os.close(w)
    ok = os.read(r, 1) == b"1"
    os.close(r)
    if not ok:
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
        raise NetworkError("the port relay could not enter the container's network namespace",
                           hint="is the container still running?")
    return child
