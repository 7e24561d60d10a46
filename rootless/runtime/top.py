"""`top`: the processes of a container, with their users named as the container names them.

Like ``docker top``: the default columns are ``ps -ef``'s; other ps options run
the host's ps, whose lines are kept for the container's pids and split into
columns (the last one, the command, keeps its spaces). User columns show the
container's ids and names: a host uid is mapped back through the container's
uid_map, and the name comes from the container's /etc/passwd, read as TEXT from
the host side (openat2 RESOLVE_IN_ROOT under /proc/PID/root, a regular file
only): nothing of the container (no NSS module) runs in the host's process.
"""

from __future__ import annotations

import os

# user columns of ps, and which of the Uid: fields of /proc/PID/status (real, effective,
# saved, fs) each shows: names, or numbers (UID: names as in ps -f, unless asked as a number)
NAME_COLUMNS = {"UID": 1, "USER": 1, "EUSER": 1, "RUSER": 0, "SUSER": 2, "FUSER": 3}
NUMBER_COLUMNS = {"EUID": 1, "RUID": 0, "SUID": 2, "FSUID": 3}
PASSWD_LIMIT = 4 << 20


def container_pids(pid: int) -> list[int]:
    """Host pids of the processes in the pid namespace of ``pid``."""
    try:
        ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat(f"/proc/{d}/ns/pid").st_ino == ns:
                out.append(int(d))
        except OSError:
            continue
    return sorted(out)


def parse_id_map(text: str) -> list[tuple[int, int, int]]:
    """/proc/PID/uid_map lines as (inside, outside, count) (pure)."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and all(x.isdigit() for x in f):
            out.append((int(f[0]), int(f[1]), int(f[2])))
    return out


def to_inside(host_id: int, maps: list[tuple[int, int, int]]) -> int | None:
    """The container's id for a host id (pure); None when it is not mapped."""
    for inside, outside, count in maps:
        if outside <= host_id < outside + count:
            return inside + host_id - outside
    return None


def passwd_names(text: str) -> dict[int, str]:
    """uid -> name of a passwd text, the first entry of each uid (pure)."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 3 and f[0] and f[2].isdigit():
            out.setdefault(int(f[2]), f[0])
    return out


def read_container_file(pid: int, path: str, limit: int = PASSWD_LIMIT) -> str | None:
    """A regular file of the container of ``pid``, as text; None when it cannot be read safely
    (symlinks resolve inside the container's root; FIFOs and devices are not read)."""
    import stat

    from rootless import syscalls as sc

    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = sc.open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) < limit:
            b = os.read(fd, min(1 << 20, limit - len(data)))
            if not b:
                break
            data += b
        return data.decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


class Users:
    """Host uids of the container of ``pid`` -> the container's uid, or its name."""

    def __init__(self, maps: list[tuple[int, int, int]], names: dict[int, str]):
        self.maps = maps
        self.names = names

    @classmethod
    def of(cls, pid: int) -> "Users":
        try:
            with open(f"/proc/{pid}/uid_map") as f:
                maps = parse_id_map(f.read())
        except OSError:
            maps = []
        return cls(maps, passwd_names(read_container_file(pid, "/etc/passwd") or ""))

    def uid(self, host_uid: int) -> str:
        inside = to_inside(host_uid, self.maps)
        return str(inside if inside is not None else 65534)     # unmapped: the overflow id

    def name(self, host_uid: int) -> str:
        inside = to_inside(host_uid, self.maps)
        if inside is None:
            return "65534"
        return self.names.get(inside, str(inside))


def status_uids(pid: int) -> list[int] | None:
    """The Uid: line of /proc/PID/status: real, effective, saved, fs."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return [int(x) for x in line.split()[1:5]]
    except (OSError, ValueError):
        pass
    return None


def split_ps(text: str, pids: list[int]) -> tuple[list[str], list[list[str]]]:
    """ps output -> (header, rows of the processes in ``pids``), each row split into the
    header's columns, the last keeping its spaces (pure). Raises ValueError without a PID column."""
    lines = text.splitlines()
    if not lines:
        return [], []
    hdr = lines[0].split()
    if "PID" not in hdr:
        raise ValueError("no PID column")
    col = hdr.index("PID")
    wanted = set(pids)
    rows = []
    for ln in lines[1:]:
        f = ln.split(None, len(hdr) - 1)
        if len(f) > col and f[col].isdigit() and int(f[col]) in wanted:
            rows.append(f)
    return hdr, rows


def name_users(hdr: list[str], rows: list[list[str]], users: Users, numeric_uid: bool = False) -> list[list[str]]:
    """Replace the user columns of ps rows by the container's names or ids; ``numeric_uid``:
    the UID column holds numbers (ps -o uid), not names (ps -f)."""
    kinds = dict(NUMBER_COLUMNS, UID=1) if numeric_uid else NUMBER_COLUMNS
    cols = [(i, h in kinds, NAME_COLUMNS.get(h, NUMBER_COLUMNS.get(h, 1))) for i, h in enumerate(hdr)
            if (h in NAME_COLUMNS or h in NUMBER_COLUMNS) and i < len(hdr) - 1]
    if not cols or "PID" not in hdr:
        return rows
    pcol = hdr.index("PID")
    out = []
    for r in rows:
        uids = status_uids(int(r[pcol])) if len(r) > pcol else None
        if uids is None:
            out.append(r)
            continue
        r = list(r)
        for i, number, which in cols:
            if i < len(r):
                r[i] = users.uid(uids[which]) if number else users.name(uids[which])
        out.append(r)
    return out


def default_rows(pids: list[int], users: Users) -> list[list[str]]:
    """``ps -ef``'s columns (UID PID PPID C STIME TTY TIME CMD) from /proc."""
    import time

    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        btime = next(int(x.split()[1]) for x in f if x.startswith("btime"))
    rows = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uids = status_uids(p)
        if uids is None:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        ppid = int(fields[1])
        cpu = (int(fields[11]) + int(fields[12])) // hz
        start = btime + int(fields[19]) / hz
        stime = time.strftime("%H:%M", time.localtime(start))
        rows.append([users.name(uids[1]), str(p), str(ppid), "0", stime, "?",
                     f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}", cmdline or f"[{comm}]"])
    return rows
