"""COPY and ADD on files: BuildKit's semantics (tonistiigi/fsutil ``copy``).

Source resolution:

* paths are relative to the source root (the build context, an earlier
  stage's filesystem, an image); ``..`` and absolute symlinks never leave
  that root (``root_path``, like containerd's ``fs.RootPath``);
* a source with ``*``, ``?`` or ``[`` is a glob (Go ``filepath.Match`` per
  path component); the part before the first wildcard component is
  resolved first, then every entry below it whose relative path matches;
  a glob matching nothing copies nothing (BuildKit), a plain path that
  does not exist is an error naming it;
* the source path itself is followed when it is a symlink; symlinks below
  a copied directory are copied as symlinks;
* in the build context, entries excluded by .dockerignore do not exist.

Destination:

* a destination ending in ``/`` (or ``/.``) is a directory (created);
  otherwise its parent is created and, when it exists as a directory, a
  file source is copied into it;
* a directory source copies its *contents* into the destination;
* created parent directories are mode 0755, owned by --chown (else 0:0);
* copied entries keep mode and times; owners: 0:0 from the build context,
  kept from a stage or image, --chown overrides both; --chmod sets the
  mode of every copied file and directory; hard links inside one copy
  stay hard links.

ADD also extracts local tar archives (plain, gzip, bzip2, xz) into the
destination directory, confined to it: a member named out of it (``../x``)
is an error, and no member is written through a symlink that leads out of
it (such symlinks are kept as links).

The functions run wherever the destination root is mounted (inside the
build's user namespace, so owners are container ids).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat as _stat
from dataclasses import dataclass, field
from pathlib import Path

from rootless.errors import BuildError

MAX_SYMLINKS = 255
NO_CONTEXT_HINT = ("give the context: rootless build -f - DIR < Dockerfile, or send a tar of it on stdin: "
                   "tar -c . | rootless build -")


class CopyError(BuildError):
    pass


# ---------------------------------------------------------------------------
# Go filepath.Match

def contains_wildcards(name: str) -> bool:
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def unescape(p: str) -> str:
    """A path without wildcards: drop the escaping backslashes."""
    return re.sub(r"\\(.)", r"\1", p)


_match_cache: dict[str, "re.Pattern[str]"] = {}


def go_match_regex(pattern: str) -> "re.Pattern[str]":
    rx = _match_cache.get(pattern)
    if rx is not None:
        return rx
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i >= n:
                raise CopyError(f"bad pattern {pattern!r}: trailing backslash")
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            j = i
            neg = False
            if j < n and pattern[j] == "^":
                neg = True
                j += 1
            items = []
            first = True
            while True:
                if j >= n:
                    raise CopyError(f"bad pattern {pattern!r}: unclosed [")
                ch = pattern[j]
                if ch == "]" and not first:
                    j += 1
                    break
                first = False
                if ch == "\\":
                    j += 1
                    if j >= n:
                        raise CopyError(f"bad pattern {pattern!r}")
                    ch = pattern[j]
                j += 1
                if j < n and pattern[j] == "-" and j + 1 < n and pattern[j + 1] != "]":
                    hi = pattern[j + 1]
                    if hi == "\\":
                        j += 1
                        hi = pattern[j + 1] if j + 1 < n else ""
                    if not hi or hi < ch:
                        raise CopyError(f"bad pattern {pattern!r}: bad range")
                    items.append(re.escape(ch) + "-" + re.escape(hi))
                    j += 2
                else:
                    items.append(re.escape(ch))
            cls = "".join(items)
            out.append(("[^" if neg else "[") + cls + "]")
            i = j
        else:
            out.append(re.escape(c))
    rx = re.compile("".join(out) + r"\Z", re.S)
    _match_cache[pattern] = rx
    return rx


def go_match(pattern: str, name: str) -> bool:
    return go_match_regex(pattern).match(name) is not None


def split_wildcards(p: str) -> tuple[str, str]:
    """``/a/b*/c`` -> ("/a", "b*/c"): the plain prefix and the glob rest."""
    parts = posixpath.normpath(p).split("/") if p else [""]
    p1: list[str] = []
    p2: list[str] = []
    found = False
    for part in parts:
        if not found and contains_wildcards(part):
            found = True
        if part == "":
            part = "/"
        (p2 if found else p1).append(part)
    return (posixpath.join(*p1) if p1 else ""), (posixpath.join(*p2) if p2 else "")


# ---------------------------------------------------------------------------
# source file systems

class SourceFS:
    """A directory tree read by COPY: the context (filtered), a stage, an image."""

    def __init__(self, root: Path, label: str):
        self.root = Path(root)
        self.label = label

    def host(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(self.host(rel))
        except OSError:
            return None

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.host(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise CopyError(f"{self.label}: cannot read the directory /{rel}: {e.strerror}") from None

    def readlink(self, rel: str) -> str:
        return os.readlink(self.host(rel))


class ContextFS(SourceFS):
    """The build context after .dockerignore: excluded entries do not exist."""

    def __init__(self, root: Path, entries: "list[tuple[str, os.stat_result]]", label: str = "build context",
                 unreadable=(), absent: bool = False):
        super().__init__(root, label)
        self.absent = absent                        # no context at all: the Dockerfile came from stdin
        self.stats: dict[str, os.stat_result] = dict(entries)
        self.unreadable = frozenset(unreadable)     # directories whose content could not be read
        self.children: dict[str, list[str]] = {}
        for rel in self.stats:
            parent, _, name = rel.rpartition("/")
            self.children.setdefault(parent, []).append(name)
        for v in self.children.values():
            v.sort()

    def lstat(self, rel: str) -> os.stat_result | None:
        if rel == "":
            try:
                return os.lstat(self.root)
            except OSError:
                return None
        return self.stats.get(rel)

    def listdir(self, rel: str) -> list[str]:
        if rel in self.unreadable:
            raise CopyError(f"{self.label}: cannot read the directory /{rel}: permission denied",
                            hint=f"make it readable (chmod -R u+rX {self.root / rel}) or exclude it in "
                                 f".dockerignore")
        return list(self.children.get(rel, ()))


def _clean_rel(p: str) -> str:
    """Any path -> a clean path relative to the root ("" is the root)."""
    n = posixpath.normpath("/" + p)
    return n.lstrip("/")


def root_path(fs: SourceFS, p: str, follow_last: bool = True) -> str:
    """Resolve ``p`` inside ``fs`` following symlinks without leaving it; relative result."""
    todo = [c for c in _clean_rel(p).split("/") if c]
    done: list[str] = []
    links = 0
    while todo:
        comp = todo.pop(0)
        if comp == ".":
            continue
        if comp == "..":
            if done:
                done.pop()
            continue
        cur = "/".join(done + [comp])
        st = fs.lstat(cur)
        if st is not None and _stat.S_ISLNK(st.st_mode) and (todo or follow_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise CopyError(f"too many levels of symbolic links: {p}")
            target = fs.readlink(cur)
            if target.startswith("/"):
                done = []
            todo = [c for c in target.split("/") if c] + todo
            continue
        done.append(comp)
    return "/".join(done)


def resolve_wildcards(fs: SourceFS, src: str) -> list[str] | None:
    """Matches of a glob source (relative paths), or None when ``src`` has no wildcard."""
    d1, d2 = split_wildcards("/" + _clean_rel(src) if src not in ("", ".", "/") else "/")
    if not d2:
        return None
    base = root_path(fs, d1)
    depth = d2.count("/") + 1
    out: list[str] = []

    def walk(rel: str, level: int) -> None:
        dirpath = f"{base}/{rel}" if base and rel else (base or rel)
        for name in fs.listdir(dirpath):
            r = f"{rel}/{name}" if rel else name
            full = f"{base}/{r}" if base else r
            st = fs.lstat(full)
            if st is None:
                continue
            if go_match(d2, r):
                out.append(full)
            elif _stat.S_ISDIR(st.st_mode) and level < depth:
                walk(r, level + 1)

    st = fs.lstat(base)
    if st is None or not _stat.S_ISDIR(st.st_mode):
        return []
    walk("", 1)
    return out


# ---------------------------------------------------------------------------
# owners

@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def read_etc(rootfs: Path, name: str) -> str:
    """``/etc/<name>`` of a root filesystem, symlinks resolved inside it ("" when missing)."""
    rel = root_path(SourceFS(rootfs, "image"), f"etc/{name}")
    try:
        fd = os.open(rootfs / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        return f.read(16 << 20).decode("utf-8", "replace")


def _entries(text: str, min_fields: int) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= min_fields and parts[2].isdigit():
            out.append(parts)
    return out


def parse_chown(spec: str, rootfs: Path | None) -> Owner:
    """``--chown=user[:group]`` (names looked up in the image's /etc/passwd and /etc/group).

    A user without a group uses the same numeric id as the group (Docker).
    """
    user, _, group = spec.partition(":")
    if not user:
        raise CopyError(f"invalid --chown {spec!r}: no user")

    def resolve(name: str, file: str, kind: str) -> int:
        if name.isdigit():
            return int(name)
        text = read_etc(rootfs, file) if rootfs is not None else ""
        for e in _entries(text, 3):
            if e[0] == name:
                return int(e[2])
        raise CopyError(f"--chown {spec!r}: unable to find {kind} {name!r} in the image's /etc/{file}",
                        hint=f"create the {kind} first (RUN add{kind} ...) or use a numeric id")

    uid = resolve(user, "passwd", "user")
    gid = resolve(group, "group", "group") if group else uid
    return Owner(uid, gid)


def resolve_owner(user: str, rootfs: Path) -> Owner:
    """The owner of what USER creates (WORKDIR): uid and the user's primary group."""
    if not user:
        return Owner(0, 0)
    u, _, g = user.partition(":")
    if g:
        return parse_chown(user, rootfs)
    passwd = _entries(read_etc(rootfs, "passwd"), 4)
    for e in passwd:
        if (u.isdigit() and e[2] == u) or e[0] == u:
            return Owner(int(e[2]), int(e[3]) if e[3].isdigit() else int(e[2]))
    if u.isdigit():
        return Owner(int(u), int(u))
    raise CopyError(f"unable to find user {u}: no matching entries in the image's /etc/passwd",
                    hint="create the user first (RUN adduser ...) or use a numeric uid")


# ---------------------------------------------------------------------------
# --chmod: octal, or symbolic as chmod(1)

_SUID, _SGID, _SVTX = 0o4000, 0o2000, 0o1000
_STANDARD = _SUID | _SGID | 0o777
_U, _G, _O = 1, 2, 4                      # which classes a u/g/o copy touches
_SET, _CLEAR = 8, 16
CHMOD_UMASK = 0o022     # symbolic clauses without u/g/o/a leave the umask's bits alone (chmod(1));
                        # BuildKit uses its daemon's umask, 022 everywhere Docker runs: fixed here so
                        # that a build does not depend on the caller's umask


@dataclass(frozen=True)
class Chmod:
    """A parsed ``--chmod``: an absolute (octal) mode, or chmod(1)'s symbolic clauses applied to each
    copied file's own mode (``u+x``, ``go-w``, ``a=rX``, ``u=rwx,go=u-w``) as BuildKit does
    (tonistiigi/dchapes-mode, BSD ``setmode``)."""

    spec: str
    absolute: int | None = None
    cmds: tuple[tuple[str, int, int], ...] = ()     # (op, bits, flags)

    def apply(self, st_mode: int) -> int:
        """The permission bits (07777) ``--chmod`` gives an entry of mode ``st_mode``."""
        if self.absolute is not None:
            return self.absolute
        old = st_mode & 0o7777
        new = old
        for op, bits, flags in self.cmds:
            if op in "ugo":
                value = {"u": (new >> 6) & 7, "g": (new >> 3) & 7, "o": new & 7}[op]
                if flags & _CLEAR:
                    clr = 7 if flags & _SET else value
                    for cls, shift in ((_U, 6), (_G, 3), (_O, 0)):
                        if flags & cls:
                            new &= ~((clr << shift) & bits)
                if flags & _SET:
                    for cls, shift in ((_U, 6), (_G, 3), (_O, 0)):
                        if flags & cls:
                            new |= (value << shift) & bits
            elif op == "+":
                new |= bits
            elif op == "-":
                new &= ~bits
            elif op == "X" and (old & 0o111 or _stat.S_ISDIR(st_mode)):
                new |= bits
        return new & 0o7777


def parse_chmod(spec: str, umask: int = CHMOD_UMASK) -> Chmod:
    """``--chmod`` value -> Chmod; CopyError for a bad one (BuildKit's messages)."""
    if spec[:1].isdigit():
        try:
            v = int(spec, 8)
        except ValueError:
            v = -1
        if not 0 <= v <= 0o7777:
            raise CopyError(f"invalid chmod parameter: '{spec}'. it should be octal string and between 0 and "
                            f"07777")
        return Chmod(spec, absolute=v)
    bad = CopyError(f"invalid chmod parameter: '{spec}': neither an octal mode (0755) nor chmod's symbolic form "
                    f"[ugoa...][+-=][rwxXst...][,...] (e.g. u+x, go-w, a=rX, u=rwx,go=rx)")
    mask = ~umask & 0o7777
    cmds: list[tuple[str, int, int]] = []

    def add(op: str, who: int, arg) -> None:
        if op == "=":
            cmds.append(("-", who or _STANDARD, 0))
            op = "+"
        if op in "+-X":
            cmds.append((op, (who & arg) if who else (mask & arg), 0))
            return
        flags = {"+": _SET, "-": _CLEAR, "=": _SET | _CLEAR}[arg]
        if who:
            flags |= (_U if who & 0o400 else 0) | (_G if who & 0o040 else 0) | (_O if who & 0o004 else 0)
            cmds.append((op, 0xFFFF, flags))
        else:
            cmds.append((op, mask, flags | _U | _G | _O))

    s, i, n = spec, 0, len(spec)
    equal_done = False
    while True:
        who = 0
        while i < n and s[i] in "augo":
            who |= {"a": _STANDARD, "u": _SUID | 0o700, "g": _SGID | 0o070, "o": 0o007}[s[i]]
            i += 1
        while True:                                 # one or more operations for these classes
            if i >= n or s[i] not in "+-=":
                raise bad
            op = s[i]
            i += 1
            if op == "=":
                equal_done = False
            who &= ~_SVTX
            perm = perm_x = 0
            while True:
                b = s[i] if i < n else ""
                if b == "r":
                    perm |= 0o444
                elif b == "w":
                    perm |= 0o222
                elif b == "x":
                    perm |= 0o111
                elif b == "X":
                    if op == "+":
                        perm_x = 0o111
                elif b == "s":
                    if who == 0 or who & ~0o007:    # not for "o" alone
                        perm |= _SUID | _SGID
                elif b == "t":
                    if who == 0 or who & ~0o007:
                        who |= _SVTX
                        perm |= _SVTX
                elif b and b in "ugo":              # copy another class's bits
                    if perm:
                        add(op, who, perm)
                        perm = 0
                    if op == "=":
                        equal_done = True
                    if perm_x:
                        add("X", who, perm_x)
                        perm_x = 0
                    add(b, who, op)
                else:
                    if perm or (op == "=" and not equal_done):
                        if op == "=":
                            equal_done = True
                        add(op, who, perm)
                        perm = 0
                    if perm_x:
                        add("X", who, perm_x)
                    break
                i += 1
            if i >= n or s[i] == ",":
                break
        if i >= n:
            break
        i += 1                                      # the comma
    return Chmod(spec, cmds=tuple(cmds))


def chmod_value(mode: "int | Chmod | None", st_mode: int) -> int:
    """The permission bits an entry of ``st_mode`` gets: --chmod's, else its own."""
    if mode is None:
        return _stat.S_IMODE(st_mode)
    if isinstance(mode, Chmod):
        return mode.apply(st_mode)
    return mode


# ---------------------------------------------------------------------------
# the copy itself

@dataclass
class CopyOptions:
    owner: Owner | None = None          # --chown (None: keep / 0:0 from the context)
    reset_owner: bool = False           # context sources: 0:0 unless --chown
    mode: "int | Chmod | None" = None   # --chmod (an int: that mode for everything)
    exclude: "object | None" = None     # PatternMatcher for --exclude
    unpack: bool = False                # ADD: extract archives
    hardlinks: dict = field(default_factory=dict)
    copied: list = field(default_factory=list)   # dest paths written (for tests and reporting)


def _dest_owner(st: os.stat_result, opt: CopyOptions) -> tuple[int, int]:
    if opt.owner is not None:
        return opt.owner.uid, opt.owner.gid
    if opt.reset_owner:
        return 0, 0
    return st.st_uid, st.st_gid


def mkdir_all(dest_root: Path, rel: str, opt: CopyOptions) -> None:
    """mkdir -p inside the root (symlinks resolved in it); new dirs 0755, owned by --chown or 0:0."""
    resolved = root_path(_dest_fs(dest_root), rel)
    if not resolved:
        return
    p = dest_root / resolved
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise CopyError(f"cannot create directory /{resolved}: a file of that name exists in its path") from None
    if st is not None:
        if not _stat.S_ISDIR(st.st_mode):
            raise CopyError(f"cannot create directory /{resolved}: a file of that name exists")
        return
    mkdir_all(dest_root, resolved.rpartition("/")[0], opt)
    os.mkdir(p, 0o755)
    os.chmod(p, 0o755)
    uid, gid = (opt.owner.uid, opt.owner.gid) if opt.owner else (0, 0)
    _chown(p, uid, gid)


def _chown(p: Path | str, uid: int, gid: int) -> None:
    try:
        os.lchown(p, uid, gid)
    except PermissionError:
        if os.geteuid() != 0 and (uid, gid) == (0, 0):
            return  # unit tests outside a user namespace
        raise
    except OSError as e:
        raise CopyError(f"cannot set the owner of {p} to {uid}:{gid}: {e.strerror}",
                        hint="the id is outside the subordinate range of your user (/etc/subuid)") from None


def _finish(st: os.stat_result, target: Path, opt: CopyOptions, is_link: bool = False) -> None:
    uid, gid = _dest_owner(st, opt)
    _chown(target, uid, gid)
    if not is_link:
        os.chmod(target, chmod_value(opt.mode, st.st_mode))
    try:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=not is_link)
    except (NotImplementedError, OSError):
        pass


def _dest_fs(dest_root: Path) -> SourceFS:
    return SourceFS(dest_root, "destination")


def _copy_entry(fs: SourceFS, src_rel: str, dest_root: Path, dest_rel: str, opt: CopyOptions,
                src_components: str) -> None:
    """Copy one entry to ``dest_rel``, whose parent is a real (resolved) directory.

    An existing symlink at ``dest_rel`` is replaced by a file source, and
    followed (inside the root, never on the host) by a directory source.
    """
    st = fs.lstat(src_rel)
    if st is None:
        raise CopyError(f"{fs.label}: {'/' + src_rel}: not found")
    if opt.exclude is not None and src_components and opt.exclude.excluded(src_components):
        return
    target = dest_root / dest_rel
    mode = st.st_mode
    try:
        tst: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        tst = None
    if _stat.S_ISDIR(mode):
        created = False
        if tst is not None and _stat.S_ISLNK(tst.st_mode):
            resolved = root_path(_dest_fs(dest_root), dest_rel)
            try:
                rst = os.lstat(dest_root / resolved)
            except FileNotFoundError:
                rst = None
            if rst is None or not _stat.S_ISDIR(rst.st_mode):
                raise CopyError(f"cannot copy directory {'/' + src_rel} to /{dest_rel}: not a directory")
            dest_rel, target, tst = resolved, dest_root / resolved, rst
        if tst is None:
            os.mkdir(target, 0o700)
            created = True
        elif not _stat.S_ISDIR(tst.st_mode):
            raise CopyError(f"cannot copy directory {'/' + src_rel} to /{dest_rel}: a file of that name exists")
        for name in fs.listdir(src_rel):
            _copy_entry(fs, f"{src_rel}/{name}" if src_rel else name, dest_root,
                        f"{dest_rel}/{name}" if dest_rel else name, opt,
                        f"{src_components}/{name}" if src_components else name)
        if created:
            _finish(st, target, opt)
        else:
            os.utime(target, ns=(tst.st_atime_ns, tst.st_mtime_ns), follow_symlinks=False)
        opt.copied.append("/" + dest_rel)
        return
    if tst is not None:
        if _stat.S_ISDIR(tst.st_mode):
            raise CopyError(f"cannot replace directory /{dest_rel} with file {'/' + src_rel}")
        os.unlink(target)
    if _stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in opt.hardlinks:
            os.link(opt.hardlinks[key], target, follow_symlinks=False)
            opt.copied.append("/" + dest_rel)
            return
        _copy_file(fs.host(src_rel), target)
        if st.st_nlink > 1:
            opt.hardlinks[key] = target
        _finish(st, target, opt)
    elif _stat.S_ISLNK(mode):
        os.symlink(fs.readlink(src_rel), target)
        _finish(st, target, opt, is_link=True)
    elif _stat.S_ISFIFO(mode):
        os.mkfifo(target)
        _finish(st, target, opt)
    elif _stat.S_ISCHR(mode) or _stat.S_ISBLK(mode):
        try:
            os.mknod(target, mode, st.st_rdev)
        except PermissionError:
            raise CopyError(f"cannot copy device {'/' + src_rel}: device nodes cannot be created without root",
                            hint="exclude it (.dockerignore) or create it at run time") from None
        _finish(st, target, opt)
    else:
        return  # sockets are not copied
    opt.copied.append("/" + dest_rel)


def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        try:
            size = os.fstat(fi.fileno()).st_size
            off = 0
            while off < size:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), size - off)
                if n == 0:
                    break
                off += n
            if off >= size:
                return
            fi.seek(off)
            fo.seek(off)
        except (AttributeError, OSError):
            fi.seek(0)
            fo.seek(0)
            fo.truncate()
        while True:
            b = fi.read(1 << 20)
            if not b:
                break
            fo.write(b)


def prepare_dest(dest_root: Path, dest: str, opt: CopyOptions) -> str:
    """Create what the destination needs (parent dirs, or the dir itself).

    Returns the destination relative to the root with every symlink
    resolved inside the root (an existing final symlink is followed, as
    BuildKit does; a missing final component stays as named).
    """
    is_dir = dest.endswith("/") or dest.endswith("/.") or dest in (".", "")
    clean = _clean_rel(dest)
    if is_dir:
        mkdir_all(dest_root, clean, opt)
    else:
        parent = clean.rpartition("/")[0]
        mkdir_all(dest_root, parent, opt)
    return root_path(_dest_fs(dest_root), clean)


def copy_one(fs: SourceFS, src_rel: str, dest_root: Path, dest_rel: str, opt: CopyOptions) -> None:
    """One resolved source (relative, symlink followed) into the prepared destination."""
    st = fs.lstat(src_rel)
    if st is None:
        raise CopyError(f"{fs.label}: /{src_rel}: not found")
    target = dest_root / dest_rel if dest_rel else dest_root
    try:
        tst: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        tst = None
    if not _stat.S_ISDIR(st.st_mode):
        if opt.unpack and _stat.S_ISREG(st.st_mode) and is_archive(fs.host(src_rel)):
            if tst is None:
                mkdir_all(dest_root, dest_rel, opt)
            elif not _stat.S_ISDIR(tst.st_mode):
                raise CopyError(f"cannot extract archive /{src_rel} to /{dest_rel}: not a directory")
            extract_archive(fs.host(src_rel), dest_root, dest_rel, opt)
            return
        if tst is not None and _stat.S_ISDIR(tst.st_mode):
            name = posixpath.basename(src_rel)
            dest_rel = f"{dest_rel}/{name}" if dest_rel else name
        _copy_entry(fs, src_rel, dest_root, dest_rel, opt, "")
        return
    if tst is None:
        mkdir_all(dest_root, dest_rel, opt)
    elif not _stat.S_ISDIR(tst.st_mode):
        raise CopyError(f"cannot copy directory /{src_rel} to /{dest_rel}: it is not a directory")
    for name in fs.listdir(src_rel):
        _copy_entry(fs, f"{src_rel}/{name}" if src_rel else name, dest_root,
                    f"{dest_rel}/{name}" if dest_rel else name, opt, name)


def resolve_sources(fs: SourceFS, sources: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """Source arguments -> (resolved relative paths, globs that matched nothing).

    A plain path that does not exist raises CopyError naming it.
    """
    out: list[str] = []
    empty: list[str] = []
    for s in sources:
        matches = resolve_wildcards(fs, s)
        if matches is None:
            rel = root_path(fs, unescape(s))
            if fs.lstat(rel) is None:
                shown = "/" + _clean_rel(unescape(s))
                if isinstance(fs, ContextFS) and fs.absent:
                    raise CopyError(f"{shown}: not found: there is no build context when the Dockerfile comes "
                                    f"from stdin", hint=NO_CONTEXT_HINT)
                raise CopyError(f"{fs.label}: {shown}: not found",
                                hint=_missing_hint(fs, shown))
            out.append(rel)
        else:
            if not matches:
                empty.append(s)
            out += [root_path(fs, m) for m in matches]
    return out, empty


def _missing_hint(fs: SourceFS, shown: str) -> str | None:
    if isinstance(fs, ContextFS):
        try:
            if os.path.lexists(fs.root / shown.lstrip("/")):
                return f"{shown} is excluded by .dockerignore"
        except OSError:
            pass
        return f"the path is relative to the build context {fs.root}"
    return None


def write_content(dest_root: Path, dest: str, name: str, data: str, opt: CopyOptions) -> None:
    """A heredoc source: a file ``name`` (0644 unless --chmod) at or into the destination."""
    dest_rel = prepare_dest(dest_root, dest, opt)
    target = dest_root / dest_rel if dest_rel else dest_root
    try:
        tst: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        tst = None
    if tst is not None and _stat.S_ISDIR(tst.st_mode):
        dest_rel = f"{dest_rel}/{name}" if dest_rel else name
        target = dest_root / dest_rel
        try:
            tst = os.lstat(target)
        except FileNotFoundError:
            tst = None
    if tst is not None:
        if _stat.S_ISDIR(tst.st_mode):
            raise CopyError(f"cannot replace directory /{dest_rel} with a file")
        os.unlink(target)
    with open(target, "xb") as f:
        f.write(data.encode())
    os.chmod(target, chmod_value(opt.mode, _stat.S_IFREG | 0o644) if opt.mode is not None else 0o644)
    uid, gid = (opt.owner.uid, opt.owner.gid) if opt.owner else (0, 0)
    _chown(target, uid, gid)
    opt.copied.append("/" + dest_rel)


# ---------------------------------------------------------------------------
# ADD: archives

_MAGIC = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


def is_archive(path: Path) -> bool:
    import tarfile

    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return False
    compressed = any(head.startswith(m) for m, _ in _MAGIC)
    try:
        with tarfile.open(path, "r:*") as tf:
            first = tf.next()
            return first is not None or compressed
    except Exception:  # noqa: BLE001 - anything that is not a readable tar is copied as a file
        return False


def _inside(rel: str, base: str) -> bool:
    return not base or rel == base or rel.startswith(base + "/")


class _Archive:
    """Where the entries of one archive go: paths confined to the destination directory."""

    def __init__(self, archive: Path, dest_root: Path, dest_rel: str, opt: CopyOptions):
        self.name = archive.name
        self.root = dest_root
        self.dest = dest_rel
        self.opt = opt
        self.fs = _dest_fs(dest_root)

    def error(self, msg: str) -> CopyError:
        return CopyError(f"archive {self.name}: {msg}",
                         hint="Docker extracts an archive inside its destination only: the archive is broken "
                              "or hostile (nothing of this step was kept)")

    def parts(self, name: str, label: str = "") -> list[str]:
        """The components of a member name below the destination; one that climbs out is refused."""
        n = posixpath.normpath(name) if name else "."
        if n == ".." or n.startswith("../"):
            raise self.error(f"{label or f'entry {name!r}'} climbs out of the destination /{self.dest} with '..'")
        return [c for c in n.split("/") if c not in ("", ".")]

    def directory(self, comps: list[str], name: str, create: bool = True) -> str:
        """The directory holding the entry ``name`` (its parent components ``comps``), relative to the root.

        Walked from the destination: a symlink on the way is followed only when it leads to a place
        inside the destination (resolved in the image, never on the host); missing directories are
        created 0755, owned by --chown or 0:0.
        """
        cur = self.dest
        for comp in comps:
            nxt = f"{cur}/{comp}" if cur else comp
            try:
                st: os.stat_result | None = os.lstat(self.root / nxt)
            except FileNotFoundError:
                st = None
            if st is not None and _stat.S_ISLNK(st.st_mode):
                res = root_path(self.fs, nxt)
                if not _inside(res, self.dest):
                    raise self.error(f"entry {name!r} goes through the symlink /{nxt} -> "
                                     f"{os.readlink(self.root / nxt)}, which leads out of the destination "
                                     f"/{self.dest}")
                nxt = res
                try:
                    st = os.lstat(self.root / nxt)
                except FileNotFoundError:
                    st = None
            if st is None:
                if not create:
                    raise self.error(f"entry {name!r}: /{nxt} does not exist")
                mkdir_all(self.root, nxt, CopyOptions(owner=self.opt.owner))
            elif not _stat.S_ISDIR(st.st_mode):
                raise self.error(f"entry {name!r}: /{nxt} is not a directory")
            cur = nxt
        return cur


def extract_archive(archive: Path, dest_root: Path, dest_rel: str, opt: CopyOptions) -> None:
    """Extract a tar into ``dest_root/dest_rel`` (a resolved directory), confined to it as Docker's
    chrooted extraction: a member named outside (``../x``) is an error, and no member is written
    through a symlink leading out of the destination (such a symlink is kept, as a link)."""
    import tarfile

    ar = _Archive(archive, dest_root, dest_rel, opt)
    links: list[tuple[str, str, str]] = []
    with tarfile.open(archive, "r:*") as tf:
        for m in tf:
            comps = ar.parts(m.name)
            if not comps:
                continue
            base = comps[-1]
            prel = ar.directory(comps[:-1], m.name)
            trel = f"{prel}/{base}" if prel else base
            target = dest_root / trel
            if not m.isdir():
                try:
                    tst = os.lstat(target)
                    if _stat.S_ISDIR(tst.st_mode):
                        import shutil

                        shutil.rmtree(target)
                    else:
                        os.unlink(target)
                except FileNotFoundError:
                    pass
            uid, gid = (opt.owner.uid, opt.owner.gid) if opt.owner else (m.uid, m.gid)
            if m.isdir():
                try:
                    tst = os.lstat(target)
                    if not _stat.S_ISDIR(tst.st_mode):
                        os.unlink(target)
                        os.mkdir(target, 0o700)
                except FileNotFoundError:
                    os.mkdir(target, 0o700)
            elif m.isreg():
                src = tf.extractfile(m)
                with open(target, "xb") as fo:
                    while True:
                        b = src.read(1 << 20)  # type: ignore[union-attr]
                        if not b:
                            break
                        fo.write(b)
            elif m.issym():
                os.symlink(m.linkname, target)
            elif m.islnk():
                links.append((trel, m.name, m.linkname))
                continue
            elif m.isfifo():
                os.mkfifo(target)
            elif m.ischr() or m.isblk():
                try:
                    os.mknod(target, (_stat.S_IFCHR if m.ischr() else _stat.S_IFBLK) | 0o600,
                             os.makedev(m.devmajor, m.devminor))
                except PermissionError:
                    continue
            else:
                continue
            _chown(target, uid, gid)
            if not m.issym():
                os.chmod(target, chmod_value(opt.mode, (_stat.S_IFDIR if m.isdir() else _stat.S_IFREG) | m.mode))
                try:
                    os.utime(target, (m.mtime, m.mtime))
                except OSError:
                    pass
            opt.copied.append("/" + trel)
    for trel, name, linkname in links:
        lcomps = ar.parts(linkname, f"hard link {name!r} -> {linkname!r}")
        if not lcomps:
            raise ar.error(f"hard link {name!r} points at the destination itself")
        lparent = ar.directory(lcomps[:-1], name, create=False)
        src_rel = f"{lparent}/{lcomps[-1]}" if lparent else lcomps[-1]
        target = dest_root / trel
        try:
            os.link(dest_root / src_rel, target, follow_symlinks=False)
        except OSError as e:
            raise CopyError(f"archive {archive.name}: hard link {trel} -> {linkname}: {e.strerror}") from None
        opt.copied.append("/" + trel)
