"""User namespaces: subordinate id ranges, id maps, and running code inside.

The default mapping puts the invoking user at uid/gid 0 in the container and
the user's whole /etc/subuid (/etc/subgid) range at 1..N::

    container 0      -> host UID
    container 1..N   -> host SUBUID_START .. SUBUID_START+N-1

Layers are extracted inside a user namespace with this same mapping, so a
file owned by uid 1000 in an image is owned by 1000 in every container.
"""

from __future__ import annotations

import os
from rootless.record import Record

from rootless import syscalls
from rootless.errors import HelperFailed, HostError, RootlessError


class IDMap(Record):
    container: int
    host: int
    size: int

    def line(self) -> str:
        return f"{self.container} {self.host} {self.size}"


class IDMapping(Record):
    uids: tuple[IDMap, ...]
    gids: tuple[IDMap, ...]
    # True when the user has no subordinate range: only their own id is mapped
    single: bool = False

    @staticmethod
    def _lookup(maps: tuple[IDMap, ...], cid: int) -> int | None:
        for m in maps:
            if m.container <= cid < m.container + m.size:
                return m.host + cid - m.container
        return None

    def host_uid(self, cid: int) -> int | None:
        return self._lookup(self.uids, cid)

    def host_gid(self, cid: int) -> int | None:
        return self._lookup(self.gids, cid)

    @property
    def uid_count(self) -> int:
        return max(m.container + m.size for m in self.uids)

    @property
    def gid_count(self) -> int:
        return max(m.container + m.size for m in self.gids)

    def to_json(self) -> dict:
        return {"uids": [[m.container, m.host, m.size] for m in self.uids],
                "gids": [[m.container, m.host, m.size] for m in self.gids],
                "single": self.single}

    @classmethod
    def from_json(cls, d: dict) -> "IDMapping":
        return cls(tuple(IDMap(*x) for x in d["uids"]), tuple(IDMap(*x) for x in d["gids"]), bool(d.get("single")))


def _user_name(uid: int) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def subid_ranges(path: str, name: str | None, uid: int) -> list[tuple[int, int]]:
    """Ranges ``(start, count)`` for this user (by name or numeric id)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(":")
                if len(parts) != 3:
                    continue
                who, start, count = parts
                if who == name or who == str(uid):
                    try:
                        out.append((int(start), int(count)))
                    except ValueError:
                        continue
    except OSError:
        pass
    return out


SUBID_COUNT = 65536
SUBID_MIN = 100000          # login.defs' SUB_UID_MIN / SUB_GID_MIN


def subid_entries(text: str) -> list[tuple[int, int]]:
    """The ``(start, count)`` of every entry of an /etc/subuid or /etc/subgid text (pure)."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or line.lstrip().startswith("#"):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0:
            out.append((start, count))
    return out


def first_free_subid_range(taken: list[tuple[int, int]], count: int = SUBID_COUNT,
                           low: int = SUBID_MIN) -> int:
    """The lowest start >= ``low`` of ``count`` ids overlapping none of ``taken`` (pure)."""
    start = low
    for s, c in sorted(taken):
        if s + c <= start:
            continue
        if s >= start + count:
            break
        start = s + c
    return start


def subid_fix(user: str, files: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")) -> str:
    """The usermod command giving ``user`` 65536 ids free in both files (the range
    ci/host-setup would pick; a fixed 100000-165535 overlaps the first user's)."""
    taken = []
    for path in files:
        try:
            with open(path) as f:
                taken += subid_entries(f.read())
        except OSError:
            pass
    s = first_free_subid_range(taken)
    r = f"{s}-{s + SUBID_COUNT - 1}"
    return f"sudo usermod --add-subuids {r} --add-subgids {r} {user}"


def _ranges_to_maps(first: int, ranges: list[tuple[int, int]]) -> list[IDMap]:
    maps = []
    c = first
    for start, count in ranges:
        if count <= 0:
            continue
        maps.append(IDMap(c, start, count))
        c += count
    return maps


def default_mapping(uid: int | None = None, gid: int | None = None,
                    subuid: str = "/etc/subuid", subgid: str = "/etc/subgid") -> IDMapping:
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    name = _user_name(uid)
    ur = subid_ranges(subuid, name, uid)
    gr = subid_ranges(subgid, name, uid)
    if not ur or not gr:
        return IDMapping((IDMap(0, uid, 1),), (IDMap(0, gid, 1),), single=True)
    return IDMapping(tuple([IDMap(0, uid, 1)] + _ranges_to_maps(1, ur)),
                     tuple([IDMap(0, gid, 1)] + _ranges_to_maps(1, gr)))


def keep_id_mapping(base: IDMapping, uid: int | None = None, gid: int | None = None) -> IDMapping:
    """Podman's ``--userns=keep-id``: the user keeps their uid/gid inside.

    Container ids 0..U-1 come from the start of the subordinate range, U is
    the user, U+1.. continue the subordinate range.
    """
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    if base.single:
        return IDMapping((IDMap(uid, uid, 1),), (IDMap(gid, gid, 1),), single=True)

    def remap(maps: tuple[IDMap, ...], me: int) -> tuple[IDMap, ...]:
        sub = [(m.host, m.size) for m in maps if m.container >= 1]
        total = sum(s for _, s in sub)
        if total < me:
            raise HostError(f"keep-id needs at least {me} subordinate ids, the range has {total}",
                            hint="give the user a larger range in /etc/subuid and /etc/subgid (65536 ids)")
        out = [IDMap(me, me, 1)]
        c = 0
        for start, size in sub:
            while size > 0:
                if c == me:
                    c += 1
                n = min(size, me - c) if c < me else size
                out.append(IDMap(c, start, n))
                c += n
                start += n
                size -= n
        return tuple(sorted(out, key=lambda m: m.container))

    return IDMapping(remap(base.uids, uid), remap(base.gids, gid))


def apply_mapping(pid: int, mapping: IDMapping) -> None:
    """Write the uid/gid maps of process ``pid`` (which has unshared its userns).

    A mapping of only our own ids is written directly (after denying
    setgroups, as the kernel requires); anything larger goes through the
    setuid helpers newuidmap/newgidmap.
    """
    from rootless import hosttools

    me_u, me_g = os.getuid(), os.getgid()
    if mapping.single and all(m.host == me_u and m.size == 1 for m in mapping.uids) \
            and all(m.host == me_g and m.size == 1 for m in mapping.gids):
        try:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
            with open(f"/proc/{pid}/uid_map", "w") as f:
                f.write("".join(m.line() + "\n" for m in mapping.uids))
            with open(f"/proc/{pid}/gid_map", "w") as f:
                f.write("".join(m.line() + "\n" for m in mapping.gids))
        except OSError as e:
            raise HostError(f"cannot write the user namespace id map: {e.strerror}") from None
        return
    jobs = []
    for tool, maps in (("newuidmap", mapping.uids), ("newgidmap", mapping.gids)):
        exe = hosttools.find(tool)
        if exe is None:
            raise HostError(f"{tool} not found: needed to map your subordinate ids",
                            hint="install it: apt-get install uidmap")
        argv = [exe, str(pid)]
        for m in maps:
            argv += [str(m.container), str(m.host), str(m.size)]
        jobs.append((argv, f"{tool} (mapping ids of the user namespace)"))
    try:
        hosttools.spawn_wait_all(jobs)   # both at once: they are independent
    except HelperFailed as e:
        raise HelperFailed(e.desc, e.status, e.stderr,
                           hint="check /etc/subuid and /etc/subgid for your user and that "
                                "newuidmap/newgidmap are setuid root (run `rootless doctor`)") from None


# ---------------------------------------------------------------------------
# Running Python code inside a fresh user namespace

def _send_exc(fd: int, e: BaseException) -> None:
    import pickle
    import traceback

    if isinstance(e, RootlessError):
        payload = ("rootless", type(e).__name__, e.message, e.hint, e.exit_code)
    elif isinstance(e, OSError):
        payload = ("oserror", e.errno, str(e))
    else:
        payload = ("other", f"{type(e).__name__}: {e}", traceback.format_exc())
    _write_all(fd, b"E" + pickle.dumps(payload))


def _raise_exc(payload) -> None:
    from rootless import errors

    kind = payload[0]
    if kind == "rootless":
        _, cls_name, msg, hint, code = payload
        cls = getattr(errors, cls_name, errors.RootlessError)
        exc = cls.__new__(cls)
        errors.RootlessError.__init__(exc, msg, hint, exit_code=code)
        raise exc
    if kind == "oserror":
        raise OSError(payload[1], payload[2])
    raise RootlessError(f"internal error in the user namespace helper: {payload[1]}", hint=payload[2].strip().splitlines()[-1] if payload[2] else None)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def run_in_userns(fn, *args, mapping: IDMapping | None = None, flags: int = syscalls.CLONE_NEWNS, pins=None,
                  **kwargs):
    """Call ``fn(*args, **kwargs)`` as root of a new user namespace; return its result.

    The function runs in a forked child (uid 0 inside, the mapping applied,
    plus the namespaces in ``flags``); its return value comes back pickled,
    and a RootlessError it raises is raised here again.

    ``pins`` (the caller's ``locks.Pins``): ``fn`` is also given ``pins=``, a
    Pins of the child's own; when ``fn`` returns, every pin it took there is
    handed to the caller's (``Pins.hand_over``/``take_over``) before the child
    exits, so content the child pinned before making it visible stays pinned
    without a gap: a digest known only in the child is pinned in the parent.
    """
    import pickle

    mapping = mapping or default_mapping()
    r_ready, w_ready = os.pipe()
    r_go, w_go = os.pipe()
    r_res, w_res = os.pipe()
    p_sock = c_sock = None
    if pins is not None:
        import socket

        p_sock, c_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r_ready)
            os.close(w_go)
            os.close(r_res)
            if p_sock is not None:
                from rootless.image.locks import Pins

                p_sock.close()
                kwargs["pins"] = Pins()
            try:
                syscalls.unshare(syscalls.CLONE_NEWUSER | flags)
            except OSError as e:
                raise HostError(f"cannot create a user namespace: {e.strerror}",
                                hint="run `rootless doctor` to see why unprivileged user namespaces are not allowed") from None
            os.write(w_ready, b"1")
            os.close(w_ready)
            if os.read(r_go, 1) != b"1":
                os._exit(3)
            os.close(r_go)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            if not mapping.single:
                os.setgroups([])
            if flags & syscalls.CLONE_NEWNS:
                syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            result = fn(*args, **kwargs)
            if c_sock is not None:
                kwargs["pins"].hand_over(c_sock)    # before the result: queued when the parent reads it
            _write_all(w_res, b"R" + pickle.dumps(result))
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            try:
                _send_exc(w_res, e)
            except BaseException:
                code = 2
        finally:
            os._exit(code)
    os.close(w_ready)
    os.close(r_go)
    os.close(w_res)
    if c_sock is not None:
        c_sock.close()
    try:
        ok = os.read(r_ready, 1) == b"1"
        os.close(r_ready)
        if ok:
            try:
                apply_mapping(pid, mapping)
            except BaseException:
                os.close(w_go)
                raise
            os.write(w_go, b"1")
        os.close(w_go)
        data = _read_all(r_res)
        if p_sock is not None and data[:1] == b"R":
            pins.take_over(p_sock)
    finally:
        os.close(r_res)
        if p_sock is not None:
            p_sock.close()
        _, status = os.waitpid(pid, 0)
    if not data:
        raise RootlessError(f"user namespace helper died (status {os.waitstatus_to_exitcode(status)})")
    payload = pickle.loads(data[1:])
    if data[:1] == b"E":
        _raise_exc(payload)
    return payload
