"""The one wrapper around external host programs.

newuidmap, newgidmap, pasta, slirp4netns, fuse-overlayfs, qemu-*, mke2fs ...
are found once (``find``), run with a human description (``run``), and a
failure raises :class:`HelperFailed` naming what was attempted and the
package that provides the program when it is missing.

``spawn_wait`` uses ``os.posix_spawn`` directly: it keeps ``subprocess``
(and its imports) off the start-up path of ``rootless run``.
"""

from __future__ import annotations

import os
import signal

from rootless.errors import HelperFailed, HostError

# program -> Debian/Ubuntu package that provides it
PACKAGES = {
    "newuidmap": "uidmap",
    "newgidmap": "uidmap",
    "pasta": "passt",
    "slirp4netns": "slirp4netns",
    "fuse-overlayfs": "fuse-overlayfs",
    "fusermount3": "fuse3",
    "fusermount": "fuse",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mmdebstrap": "mmdebstrap",
    "nft": "nftables",
}

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_cache: dict[str, str | None] = {}


def package_for(name: str) -> str:
    if name in PACKAGES:
        return PACKAGES[name]
    if name.startswith("qemu-system-"):
        arch = name[len("qemu-system-"):]
        return {"x86_64": "qemu-system-x86", "aarch64": "qemu-system-arm", "arm": "qemu-system-arm"}.get(arch, "qemu-system")
    if name.startswith("qemu-"):
        return "qemu-user-static"
    return name


def find(name: str, env_path: str | None = None) -> str | None:
    """Absolute path of ``name`` on PATH (plus the sbin dirs), or None."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    key = name if env_path is None else f"{name}\0{env_path}"
    if key in _cache:
        return _cache[key]
    path = env_path if env_path is not None else os.environ.get("PATH", "")
    found = None
    seen = set()
    for d in path.split(os.pathsep) + _DEFAULT_PATH.split(":"):
        if not d or d in seen:
            continue
        seen.add(d)
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            found = p
            break
    _cache[key] = found
    return found


def require(name: str, purpose: str) -> str:
    p = find(name)
    if p is None:
        raise HostError(f"{name} not found: needed to {purpose}",
                        hint=f"install it: apt-get install {package_for(name)}")
    return p


def _spawn(argv: list[str], desc: str, stdin_null: bool = True) -> tuple[int, int]:
    """posix_spawn argv with stderr on a pipe; returns (pid, read end)."""
    r, w = os.pipe()
    fa = [(os.POSIX_SPAWN_DUP2, w, 2), (os.POSIX_SPAWN_CLOSE, r)]
    if stdin_null:
        fa.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))  # Python ignores them; helpers must not
    except OSError as e:
        os.close(r)
        os.close(w)
        raise HelperFailed(desc, None, e.strerror or str(e),
                           hint=f"install it: apt-get install {package_for(os.path.basename(argv[0]))}") from None
    os.close(w)
    return pid, r


def _reap(pid: int, r: int, desc: str) -> HelperFailed | None:
    """Read the helper's stderr to EOF, wait for it; the failure, if it failed."""
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return HelperFailed(desc, code, b"".join(chunks).decode(errors="replace"))
    return None


def spawn_wait(argv: list[str], desc: str, *, stdin_null: bool = True) -> None:
    """Run argv to completion; raise HelperFailed with its stderr on failure."""
    failure = _reap(*_spawn(argv, desc, stdin_null), desc)
    if failure is not None:
        raise failure


def spawn_wait_all(jobs: list[tuple[list[str], str]]) -> None:
    """Like spawn_wait for several programs at once (started together, then
    waited for): newuidmap and newgidmap of one container run in parallel."""
    started = []
    failure = None
    try:
        for argv, desc in jobs:
            started.append((*_spawn(argv, desc), desc))
    finally:
        for pid, r, desc in started:  # every helper is reaped; the first failure is raised
            f = _reap(pid, r, desc)
            if failure is None:
                failure = f
    if failure is not None:
        raise failure


def run(argv: list[str], desc: str, *, input: bytes | None = None, timeout: float | None = None,
        check: bool = True, env: dict[str, str] | None = None, cwd: str | None = None):
    """Run a helper program and capture its output (``subprocess.run``)."""
    import subprocess

    exe = argv[0] if "/" in argv[0] else find(argv[0])
    if exe is None:
        raise HostError(f"{argv[0]} not found: needed to {desc}",
                        hint=f"install it: apt-get install {package_for(argv[0])}")
    try:
        cp = subprocess.run([exe, *argv[1:]], input=input, capture_output=True, timeout=timeout,
                            env=env, cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HelperFailed(desc, None, f"timed out after {timeout} s") from None
    except OSError as e:
        raise HelperFailed(desc, None, e.strerror or str(e)) from None
    if check and cp.returncode != 0:
        raise HelperFailed(desc, cp.returncode, cp.stderr.decode(errors="replace"))
    return cp


def spawn_capture(argv: list[str], desc: str, *, timeout: float = 10.0) -> bytes:
    """Run argv (stdin /dev/null), return its stdout; HelperFailed on failure.

    Like ``spawn_wait``, uses ``os.posix_spawn`` so that short queries on the
    start-up path (``qemu-aarch64-static --version``) do not import subprocess.
    A program still running after ``timeout`` seconds is killed.
    """
    import select
    import signal
    import time

    r, w = os.pipe()
    er, ew = os.pipe()
    fa = [(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, ew, 2), (os.POSIX_SPAWN_CLOSE, r),
          (os.POSIX_SPAWN_CLOSE, er), (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))  # as _spawn (pasta refuses SIG_IGN)
    except OSError as e:
        for fd in (r, w, er, ew):
            os.close(fd)
        raise HelperFailed(desc, None, e.strerror or str(e),
                           hint=f"install it: apt-get install {package_for(os.path.basename(argv[0]))}") from None
    os.close(w)
    os.close(ew)
    out, err = [], []
    open_fds = {r: out, er: err}
    deadline = time.monotonic() + timeout
    killed = False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            b = os.read(fd, 65536)
            if b:
                open_fds[fd].append(b)
            else:
                del open_fds[fd]
    os.close(r)
    os.close(er)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if killed:
        raise HelperFailed(desc, None, f"timed out after {timeout} s")
    if code != 0:
        raise HelperFailed(desc, code, b"".join(err).decode(errors="replace"))
    return b"".join(out)
