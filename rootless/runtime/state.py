"""Containers on disk: ``containers/<id>/config.json`` + ``state.json``.

config.json is written once at create (atomic); state.json is replaced
atomically on every change, under an flock of the container's directory.
Creating, renaming and removing take ``containers.lock`` (names are unique).

The truth about "running" comes from /proc: a recorded pid counts only while
a process with that pid AND the recorded start time (field 22 of
/proc/PID/stat) exists, so a dead monitor or a rebooted host never leaves a
ghost "running" container in ``ps``. The start time counts clock ticks since
boot, so a pid and start time recorded before a reboot could name a process
of this boot: state.json also records the boot (/proc/sys/kernel/random/boot_id),
and the pids of another boot name nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from rootless.errors import ContainerNotFound, NameInUse, RootlessError, StoreError, UsageError
from rootless.record import Record
from rootless.runtime.spec import ContainerSpec

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

_ADJ = ("admiring", "agitated", "amazing", "angry", "awesome", "blissful", "bold", "brave", "busy", "clever",
        "cool", "crazy", "dazzling", "eager", "ecstatic", "elegant", "epic", "festive", "focused", "friendly",
        "funny", "gallant", "gifted", "happy", "hopeful", "jolly", "keen", "kind", "laughing", "lucid",
        "magical", "modest", "nice", "nostalgic", "peaceful", "pensive", "quirky", "relaxed", "serene",
        "sharp", "stoic", "sweet", "tender", "trusting", "upbeat", "vibrant", "wizardly", "youthful", "zen")
_NAMES = ("albattani", "babbage", "bardeen", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler",
          "fermat", "feynman", "galileo", "gauss", "goodall", "hamilton", "hopper", "hypatia", "johnson",
          "kepler", "knuth", "lamarr", "leakey", "lovelace", "margulis", "mccarthy", "meitner", "newton",
          "noether", "pascal", "pasteur", "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak")


def now_iso(t_ns: int | None = None) -> str:
    t_ns = time.time_ns() if t_ns is None else t_ns
    s, ns = divmod(t_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ns:09d}Z"


def parse_iso(s: str) -> float:
    """RFC 3339 (as written by now_iso, or with an offset) -> unix time."""
    if not s:
        return 0.0
    import datetime

    txt = s.strip()
    frac = 0.0
    if "." in txt:
        head, rest = txt.split(".", 1)
        digits = ""
        for ch in rest:
            if ch.isdigit():
                digits += ch
            else:
                break
        tz = rest[len(digits):]
        frac = float("0." + digits) if digits else 0.0
        txt = head + tz
    if txt.endswith("Z"):
        txt = txt[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(txt)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp() + frac


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


_boot_id: list[str] = []


def current_boot_id() -> str:
    """This boot's random id ("" when the kernel does not say)."""
    if not _boot_id:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id.append(f.read().strip())
        except OSError:
            _boot_id.append("")
    return _boot_id[0]


def same_boot(recorded: str, current: str) -> bool:
    """Whether pids recorded under boot ``recorded`` may still name processes (pure): not when
    both ids are known and differ. A state without one (older rootless) relies on start times."""
    return not recorded or not current or recorded == current


def alive(pid: int | None, start: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    st = proc_start_time(pid)
    if st is None:
        return False
    if start is not None and st != start:
        return False
    # a zombie has exited already
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:data.rindex(b")") + 3] not in (b"Z", b"X")
    except (OSError, ValueError):
        return False


class State(Record):
    status: str = "created"            # created | running | exited | removing
    pid: int = 0
    pid_start: int | None = None
    monitor_pid: int = 0
    monitor_start: int | None = None
    exit_code: int | None = None
    started_at: str = ""
    finished_at: str = ""
    error: str = ""
    network: dict = {}
    attached: bool = False
    restarting: bool = False           # `restart` is stopping it: a --rm container stays
    emulation: dict = {}               # archsupport Emulation.to_json() chosen at create / used at start ({}: native)
    boot_id: str = ""                  # the boot its pids belong to

    def to_json(self) -> dict:
        return {"status": self.status, "pid": self.pid, "pid_start": self.pid_start,
                "monitor_pid": self.monitor_pid, "monitor_start": self.monitor_start,
                "exit_code": self.exit_code, "started_at": self.started_at, "finished_at": self.finished_at,
                "error": self.error, "network": self.network, "attached": self.attached,
                "restarting": self.restarting, "emulation": self.emulation, "boot_id": self.boot_id}

    @classmethod
    def from_json(cls, d: dict) -> "State":
        return cls(**{k: v for k, v in d.items() if k in cls._fields})

    @property
    def running(self) -> bool:
        return self.status == "running"

    def in_boot(self, current: str) -> "State":
        """This state as seen in boot ``current`` (pure): the pids (container, monitor, network
        helpers) recorded in another boot are forgotten, so nothing signals or waits for them."""
        if same_boot(self.boot_id, current) or not (self.pid or self.monitor_pid or self.network):
            return self
        return self.replace(pid=0, pid_start=None, monitor_pid=0, monitor_start=None, network={})

    def monitor_alive(self) -> bool:
        return alive(self.monitor_pid, self.monitor_start)

    def truth(self) -> "State":
        """The state as /proc says it is (no ghosts)."""
        if self.status in ("running", "stopping") and not alive(self.pid, self.pid_start):
            if self.exit_code is None and self.monitor_alive():
                return self  # the monitor is recording the real exit status right now
            return self.replace(status="exited", pid=0,
                           exit_code=self.exit_code if self.exit_code is not None else 255)
        if self.status == "starting" and not self.monitor_alive():
            return self.replace(status="created")
        return self


class Container(Record):
    id: str
    name: str
    image_id: str
    image_ref: str
    created: str
    spec: ContainerSpec
    state: State
    dir: Path
    anon_volumes: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id[:12]


def _atomic_write(path: Path, data: bytes, sync: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def valid_name(name: str) -> bool:
    return bool(name) and name[0].isalnum() and all(c in _NAME_OK for c in name) and len(name) <= 128


class ContainerStore:
    """The containers of one store (``Config.data_root``)."""

    def __init__(self, config):
        self.config = config
        self.root = Path(config.data_root) / "containers"

    # -- locking -----------------------------------------------------------

    @contextmanager
    def lock(self):
        from rootless.config import ensure_data_root

        ensure_data_root(self.root.parent)
        self.root.mkdir(exist_ok=True)
        fd = os.open(self.root.parent / "containers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def ctr_lock(self, cid: str):
        try:
            fd = os.open(self.root / cid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound(f"no such container: {cid[:12]}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- reading -----------------------------------------------------------

    def ids(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.root) if len(n) == 64 and not n.startswith(".")]
        except FileNotFoundError:
            return []

    def load(self, cid: str) -> Container:
        d = self.root / cid
        try:
            cfg = json.loads((d / "config.json").read_bytes())
        except FileNotFoundError:
            raise ContainerNotFound(f"no such container: {cid[:12]}") from None
        except ValueError:
            raise StoreError(f"container {cid[:12]}: config.json is damaged",
                             hint=f"remove it: rootless rm -f {cid[:12]}") from None
        try:
            raw = State.from_json(json.loads((d / "state.json").read_bytes())).in_boot(current_boot_id())
        except (OSError, ValueError, TypeError):
            raw = State(status="exited", exit_code=255, error="state.json missing or damaged")
        st = raw.truth()
        if raw.status in ("running", "stopping") and st.status == "exited" and not raw.monitor_alive():
            st = self._reap(cid, raw)
        return Container(cfg["id"], cfg["name"], cfg.get("image_id", ""), cfg.get("image_ref", ""),
                         cfg.get("created", ""), ContainerSpec.from_json(cfg["spec"]), st.truth(), d,
                         tuple(cfg.get("anon_volumes", ())))

    def _reap(self, cid: str, raw: State) -> State:
        """The container and its monitor died without the monitor recording it (the monitor
        was SIGKILLed, the host crashed): stop what the monitor would have stopped (the
        network helpers: pasta does not notice that a namespace it joined by pid is gone;
        ``network.stop`` checks each helper's pid against its start time) and record the
        truth once, so later commands see a plain exited container."""
        if raw.network:
            try:
                from rootless import network

                network.stop(raw.network)
            except Exception:  # noqa: BLE001 - best effort: the state below is recorded anyway
                pass
        with self.ctr_lock(cid):
            cur = self.raw_state(cid)
            if cur.status not in ("running", "stopping") or cur.monitor_alive() or alive(cur.pid, cur.pid_start):
                return cur.truth()
            st = cur.truth().replace(network={}, error=cur.error or "the monitor died before the container")
            self.write_state(cid, st)
            return st

    def list(self) -> list[Container]:
        out = []
        for cid in self.ids():
            try:
                out.append(self.load(cid))
            except (ContainerNotFound, StoreError, KeyError, TypeError):
                continue
        out.sort(key=lambda c: c.created, reverse=True)
        return out

    def lookup(self, ref: str) -> Container:
        """By full id, name, or unique id prefix (Docker's rules)."""
        if not ref:
            raise UsageError("container name or id must not be empty")
        if len(ref) == 64 and (self.root / ref).is_dir():
            return self.load(ref)
        ids = self.ids()
        by_prefix = []
        for cid in ids:
            try:
                name = json.loads((self.root / cid / "config.json").read_bytes())["name"]
            except (OSError, ValueError, KeyError):
                continue
            if name == ref or name == ref.lstrip("/"):
                return self.load(cid)
            if cid.startswith(ref):
                by_prefix.append(cid)
        if len(by_prefix) == 1:
            return self.load(by_prefix[0])
        if len(by_prefix) > 1:
            raise UsageError(f"multiple containers match the id prefix {ref}", hint="give more of the id")
        raise ContainerNotFound(f"no such container: {ref}")

    def names(self) -> set[str]:
        out = set()
        for cid in self.ids():
            try:
                out.add(json.loads((self.root / cid / "config.json").read_bytes())["name"])
            except (OSError, ValueError, KeyError):
                continue
        return out

    # -- writing -----------------------------------------------------------

    def _random_name(self, taken: set[str]) -> str:
        def pick(seq):
            return seq[int.from_bytes(os.urandom(2), "big") % len(seq)]

        for _ in range(100):
            n = f"{pick(_ADJ)}_{pick(_NAMES)}"
            if n not in taken:
                return n
        return f"{pick(_ADJ)}_{pick(_NAMES)}{int.from_bytes(os.urandom(3), 'big')}"

    @staticmethod
    def new_id() -> str:
        return os.urandom(32).hex()

    def create(self, name: str | None, spec: ContainerSpec, *, anon_volumes: tuple[str, ...] = (),
               cid: str | None = None, emulation: dict | None = None) -> Container:
        if name is not None and not valid_name(name.lstrip("/")):
            raise UsageError(f"invalid container name {name!r}",
                             hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters")
        cid = cid or self.new_id()
        with self.lock():
            taken = self.names()
            if name is not None:
                name = name.lstrip("/")
                if name in taken:
                    owner = next((c for c in self.list() if c.name == name), None)
                    raise NameInUse(f"the container name \"{name}\" is already in use"
                                    + (f" by container {owner.short_id}" if owner else ""),
                                    hint="remove that container (rootless rm) or choose another --name")
            else:
                name = self._random_name(taken)
            d = self.root / cid
            tmp = self.root / f".{cid}.tmp"
            tmp.mkdir(mode=0o700)
            for sub in ("upper", "work", "rootfs", "userdata"):
                (tmp / sub).mkdir()
            created = now_iso()
            cfg = {"id": cid, "name": name, "image_id": spec.image_id, "image_ref": spec.image_ref,
                   "created": created, "spec": spec.to_json(), "anon_volumes": list(anon_volumes)}
            _atomic_write(tmp / "config.json", json.dumps(cfg, indent=1).encode())
            state = State(emulation=dict(emulation or {}))
            _atomic_write(tmp / "state.json", json.dumps(state.to_json()).encode())
            os.rename(tmp, d)
        return Container(cid, name, spec.image_id, spec.image_ref, created, spec, state, d, anon_volumes)

    def write_state(self, cid: str, state: State) -> None:
        _atomic_write(self.root / cid / "state.json", json.dumps(state.to_json()).encode())

    def update_state(self, cid: str, **changes) -> State:
        """Read-modify-write state.json under the container's lock."""
        with self.ctr_lock(cid):
            try:
                st = State.from_json(json.loads((self.root / cid / "state.json").read_bytes()))
            except (OSError, ValueError, TypeError):
                st = State()
            st = st.replace(**changes)
            self.write_state(cid, st)
            return st

    def raw_state(self, cid: str) -> State:
        try:
            return State.from_json(json.loads((self.root / cid / "state.json").read_bytes())).in_boot(
                current_boot_id())
        except (OSError, ValueError, TypeError):
            code = self.removed_exit(cid)
            return State(status="exited", exit_code=255 if code is None else code)

    # The exit status of a container removed by --rm, for a `wait` that started
    # before the removal (Podman keeps them for a while too): <runtime dir>/exits/<id>
    # (volatile, outside the store: --rm leaves nothing there).
    EXIT_KEEP = 300.0

    def _exits(self) -> Path:
        from rootless.config import runtime_subdir

        return runtime_subdir(self.config.runtime_dir, "exits")

    def record_exit(self, cid: str, code: int) -> None:
        try:
            d = self._exits()
            now = time.time()
            for e in os.scandir(d):
                try:
                    if now - e.stat(follow_symlinks=False).st_mtime > self.EXIT_KEEP:
                        os.unlink(e.path)
                except OSError:
                    pass
            _atomic_write(d / cid, str(int(code)).encode())
        except (OSError, RootlessError):
            pass    # (only for a `wait` racing an --rm: not worth failing the container's end)

    def removed_exit(self, cid: str) -> int | None:
        try:
            return int((self._exits() / cid).read_text())
        except (OSError, ValueError, RootlessError):
            return None

    def rename(self, c: Container, new: str) -> None:
        if not valid_name(new.lstrip("/")):
            raise UsageError(f"invalid container name {new!r}",
                             hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters")
        new = new.lstrip("/")
        with self.lock():
            if new in self.names():
                raise NameInUse(f"the container name \"{new}\" is already in use",
                                hint="choose another name")
            p = c.dir / "config.json"
            cfg = json.loads(p.read_bytes())
            cfg["name"] = new
            _atomic_write(p, json.dumps(cfg, indent=1).encode(), sync=True)

    def delete(self, c: Container, mapping=None) -> None:
        """Remove the container's directory (its upper dir holds subordinate-owned files)."""
        from rootless.storage import remove_tree

        with self.lock():
            if not c.dir.exists():
                return
            # rename first: a half-removed container never shows up in ps
            # (the pid: sweep() finishes the job of a remover that died)
            gone = self.root / f".{c.id}.removing{os.getpid()}"
            try:
                os.rename(c.dir, gone)
            except FileNotFoundError:
                return
        remove_tree(gone, mapping)

    def sweep(self, mapping=None) -> list[str]:
        """Remove what interrupted creates and removals left (hidden ``.<id>.tmp`` and
        ``.<id>.removing<pid>`` of dead processes); returns their ids."""
        from rootless.storage import remove_tree

        todo = []
        with self.lock():    # creates and the renames of removals happen under this lock
            try:
                names = os.listdir(self.root)
            except FileNotFoundError:
                return []
            for n in names:
                cid, dot, rest = n[1:].partition(".")
                if not n.startswith(".") or len(cid) != 64 or not dot:
                    continue
                if rest.startswith("removing"):
                    pid = rest[len("removing"):]
                    if pid.isdigit() and int(pid) != os.getpid() and os.path.exists(f"/proc/{pid}"):
                        continue      # still being removed
                elif rest != "tmp":
                    continue
                mine = self.root / f".{cid}.removing{os.getpid()}"
                try:
                    os.rename(self.root / n, mine)
                except OSError:
                    continue
                todo.append((cid, mine))
        for cid, path in todo:
            remove_tree(path, mapping)
        return [cid for cid, _ in todo]
