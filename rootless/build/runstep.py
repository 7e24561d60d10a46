"""RUN steps: a rootless container of our runtime on the stage's layers.

The step's container is not a ``rootless ps`` container: like BuildKit's, it
has no record in ``containers/``. This module uses the runtime's library
pieces directly: ``runtime.spec.ContainerSpec`` (argv, env, USER, WORKDIR,
mounts), ``runtime.plan.plan`` with a ``Host`` whose lower dirs are the
stage's layers and whose upper dir is a fresh staging directory,
``runtime.execute.spawn`` (user/mount/pid/... namespaces, emulation of a
foreign platform through archsupport), and ``network.start/stop``.

After a zero exit status the mount points the runtime had to create
(``/proc``, ``/dev``, ``/sys``, ``/etc/hosts``, ``/etc/resolv.conf``...,
when the image did not have them) are removed from the upper directory
through directory fds (the step may have left symlinks to the host there),
which then becomes the step's layer (``snapshot``). A non-zero status is a
:class:`StepFailed` naming the step, the command and the status; its last
output lines are in the hint.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from pathlib import Path

from rootless.build import plan as P
from rootless.errors import BuildError, RootlessError
from rootless.runtime.monitor import kill_and_reap

STUBS = ("proc", "dev", "sys", "etc/hosts", "etc/hostname", "etc/resolv.conf")
HOSTNAME = "buildkitsandbox"


class _Output:
    """Forward a pipe to ``fd`` (or nowhere) and keep the last lines for an error message."""

    def __init__(self, r: int, fd: int | None, keep: int = 25):
        self.r = r
        self.fd = fd
        self.tail: deque[bytes] = deque(maxlen=keep)
        self._partial = b""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                b = os.read(self.r, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not b:
                break
            if self.fd is not None:
                try:
                    os.write(self.fd, b)
                except OSError:
                    self.fd = None
            lines = (self._partial + b).split(b"\n")
            self._partial = lines.pop()
            self.tail.extend(lines)
        if self._partial:
            self.tail.append(self._partial)
        os.close(self.r)

    def join(self) -> str:
        self.thread.join(timeout=10)
        return "\n".join(x.decode("utf-8", "replace") for x in self.tail)


def _is_foreign(platform) -> bool:
    from archsupport.platform import host_platform, native_platforms

    return not any(n.matches(platform) or platform.matches(n) for n in native_platforms(host_platform()))


def _mounts(builder, graph, step: P.RunStep, opts, cdir: Path, mapping) -> tuple:
    """RUN --mount -> MountSpecs of the runtime (and the stub paths they need)."""
    from rootless.build.fscopy import SourceFS, root_path
    from rootless.runtime.spec import MountSpec

    out = []
    for m in step.mounts:
        target = "/" + m.target.strip("/") if not m.target.startswith("/") else m.target
        if m.type == "cache":
            import hashlib

            ident = m.id or target
            d = builder.store.root / "buildcache-mounts" / hashlib.sha256(ident.encode()).hexdigest()[:32]
            if not d.exists():
                d.mkdir(parents=True, mode=0o755)
                os.chmod(d, m.mode if m.mode is not None else 0o755)
                if m.uid or m.gid:
                    from rootless.userns import run_in_userns

                    run_in_userns(os.chown, str(d), m.uid or 0, m.gid or 0, mapping=mapping)
            out.append(MountSpec("bind", target, str(d), False))
        elif m.type == "tmpfs":
            out.append(MountSpec("tmpfs", target, "", False, (f"size={m.size}",) if m.size else ()))
        elif m.type == "bind":
            ro = True if m.readonly is None else m.readonly
            if m.from_:
                src = graph.from_source(m.from_)
                lowers = (builder.lower_dirs(builder._stage_results[src.stage].layers) if src.kind == "stage"
                          else [str(p) for p in builder.store.layer_dirs(
                              builder.step_image(graph, step, src.ref, opts))])
                view = cdir / f"mnt-{len(out)}"
                from rootless.userns import run_in_userns
                from rootless.storage import vfs_materialize

                run_in_userns(vfs_materialize, list(lowers), str(view), mapping=mapping)
                rel = root_path(SourceFS(view, m.from_), m.source or "/")
                out.append(MountSpec("bind", target, str(view / rel) if rel else str(view), ro))
            else:
                fs = builder._context_fs(opts)
                rel = root_path(fs, m.source or "/")
                if rel and fs.lstat(rel) is None:      # checked with the cache key already
                    raise BuildError(f"{builder.where(graph, step)}: "
                                     f"RUN --mount=type=bind: {m.source!r} is not in the build context")
                out.append(MountSpec("bind", target, str(Path(opts.context) / rel) if rel else str(opts.context),
                                     ro))
        elif m.type in ("secret", "ssh"):
            if m.required:
                raise BuildError(f"{builder.where(graph, step)}: RUN --mount=type={m.type} is not supported by "
                                 f"rootless build",
                                 hint="pass the data another way (a bind mount of a file in the context)")
            continue   # not provided: Docker skips an optional secret too
    return tuple(out)


def run_step(builder, graph, node, step: P.RunStep, layers, opts):
    """Run one RUN step; return the snapshot's LayerInfo (raises StepFailed)."""
    from rootless import network, storage
    from rootless import syscalls as sc
    from rootless.build.builder import StepFailed
    from rootless.image.locks import Staging
    from rootless.network import plan_network
    from rootless.runtime.execute import spawn
    from rootless.runtime.plan import Host, plan
    from rootless.runtime.spec import DEFAULT_CAPS, ContainerSpec
    from rootless.userns import default_mapping

    store = builder.store
    config = builder.config
    platform = node.platform
    foreign = _is_foreign(platform)
    emu = None
    if foreign:
        from rootless.runtime.monitor import choose_emulation

        emu = choose_emulation(config, str(platform))
    mapping = default_mapping()
    driver = storage.select_driver_name(config)
    if driver == "vfs":
        driver = "overlay" if storage.kernel_overlay_ok() else ("fuse-overlayfs" if storage.fuse_overlayfs_path()
                                                                 else "")
        if not driver:
            raise BuildError("RUN steps need an overlay file system (kernel >= 5.11 or fuse-overlayfs)",
                             hint="install fuse-overlayfs (apt-get install fuse-overlayfs)")
    staging = Staging(store.root / "tmp")
    cdir = staging.path
    try:
        for d in ("upper", "work", "rootfs", "userdata"):
            (cdir / d).mkdir(mode=0o755)
        os.chmod(cdir / "upper", 0o755)
        env = list(step.env) + list(step.proxy_env)
        mounts = _mounts(builder, graph, step, opts, cdir, mapping)
        argv = list(step.argv)
        if step.script is not None:
            sd = cdir / "pipes"
            sd.mkdir()
            (sd / step.script.name).write_text(step.script.content)
            os.chmod(sd / step.script.name, 0o755)
            from rootless.runtime.spec import MountSpec

            mounts = mounts + (MountSpec("bind", "/dev/pipes", str(sd), True),)
        spec = ContainerSpec(image_id="", image_ref="", argv=tuple(argv), env=tuple(env),
                             working_dir=step.workdir or "/", user=step.user, hostname=HOSTNAME, mounts=mounts,
                             caps=DEFAULT_CAPS, network=step.network or opts.network or "default",
                             platform=str(platform))
        netplan = plan_network(spec, config)
        for path, text in netplan.etc_files(HOSTNAME).items():
            p = cdir / "userdata" / os.path.basename(path)
            p.write_text(text)
            os.chmod(p, 0o644)
        lowers = tuple(builder.lower_dirs(layers))
        if not lowers:
            (cdir / "empty").mkdir()
            lowers = (str(cdir / "empty"),)
        host = Host(container_dir=str(cdir), store_dir=str(store.root), lowers=lowers,
                    driver=driver, fuse=storage.fuse_overlayfs_path() or "", new_netns=netplan.new_netns,
                    single_mapping=mapping.single, foreign_platform=str(platform) if foreign else "",
                    cgroup2_unified=os.path.exists("/sys/fs/cgroup/cgroup.controllers"))
        steps = plan(spec, host)
        r, w = os.pipe()
        ctx: dict = {"emulation": emu, "stdio": (None, w, w), "platform": str(platform) if platform else ""}
        os.set_inheritable(w, True)
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        out = _Output(r, builder.output)
        try:
            launched = spawn(steps, host, mapping, new_netns=netplan.new_netns, ctx=ctx)
        finally:
            os.close(w)
        out.start()
        pid = launched.pid
        net_state: dict = {}
        try:
            try:
                net_state = network.start(netplan, pid, str(cdir / "userdata"))
                launched.go()
            except RootlessError as e:
                early = launched.early_error()
                launched.abort()
                kill_and_reap(pid)
                tail = out.join()
                err = early or e
                raise StepFailed(f"{builder.where(graph, step)}: {err.message}",
                                 hint=err.hint or (tail.splitlines()[-1] if tail else None), exit_code=1) from None
            status = _wait(pid)
        finally:
            network.stop(net_state)
            _reap()
        tail = out.join()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            what = f"exit code: {code}" if code > 0 else f"killed by signal {-code}"
            raise StepFailed(f"{builder.where(graph, step)}: process "
                             f"\"{' '.join(step.argv)}\" did not complete successfully: {what}",
                             hint=failure_hint(tail, shown=builder.output is not None), exit_code=1)
        from rootless.userns import run_in_userns

        stubs = list(STUBS) + [m.target.strip("/") for m in mounts] + [step.workdir.strip("/")]
        # the step's layer is pinned in the child before it is visible, then held by the builder's pins
        return run_in_userns(_finish, store, str(cdir / "upper"), list(host.lowers), stubs, str(cdir),
                             pins=builder._pins)
    finally:
        staging.close()
        store.remove_trees([cdir])


def failure_hint(output: str, shown: bool) -> str:
    """The hint of a failed RUN: where its output is (above, or its last lines when it was not
    shown, as with -q), or that it printed nothing (pure)."""
    if not output.strip():
        return "the command printed nothing"
    if shown:
        return "see the command's output above"
    return "its last output:\n" + "\n".join(output.splitlines()[-5:])


def _wait(pid: int) -> int:
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                return status
            except InterruptedError:
                continue
    except KeyboardInterrupt:
        kill_and_reap(pid)
        raise


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _lower_stat(lowers: list[str], rel: str) -> os.stat_result | None:
    """``lstat`` of ``rel`` in the merged view of the lower dirs (top-most wins), or None."""
    parts = [p for p in rel.split("/") if p]
    for low in reversed(lowers):
        p = low
        for i, comp in enumerate(parts):
            p = os.path.join(p, comp)
            try:
                st = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                break
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None          # whited out in this layer
            if i == len(parts) - 1:
                return st
            if not stat.S_ISDIR(st.st_mode):
                break
    return None


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, "user.overlay.opaque") == b"y"
    except OSError:
        return False


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(root_fd: int, parts) -> int | None:
    """An fd of the directory ``parts`` below ``root_fd``, reached without following any
    symlink: the step may have left links in its upper dir (to anywhere on the host,
    which this process, the user, can change); None when ``parts`` is not a directory."""
    fd = os.dup(root_fd)
    for c in parts:
        try:
            nfd = os.open(c, _O_DIR, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nfd
    return fd


def _finish(store, upper: str, lowers: list[str], stubs: list[str], staging: str, *, pins):
    """(in the user namespace) remove the runtime's mount stubs, then snapshot the upper dir (its blob
    and layer pinned in ``pins``).

    A stub is removed when the image did not have that path and it is still an
    empty file or directory; a directory the stub's creation copied up (e.g.
    /etc for /etc/hosts) is dropped from the upper dir again when it is empty
    and otherwise as in the image (only its time changed). Every path is taken
    from the upper dir through directory fds, never through a symlink.
    """
    import posixpath

    from rootless.build.snapshot import snapshot_into_store

    rels = {posixpath.normpath("/" + s).lstrip("/") for s in stubs if s}
    parents: set[str] = set()
    root_fd = os.open(upper, _O_DIR)
    try:
        for rel in sorted((r for r in rels if r), key=lambda s: -s.count("/")):
            parent = os.path.dirname(rel)
            while parent:
                parents.add(parent)
                parent = os.path.dirname(parent)
            *dirs, name = rel.split("/")
            pfd = _open_dir(root_fd, dirs)
            if pfd is None:
                continue
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if _lower_stat(lowers, rel) is not None:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(name, dir_fd=pfd)          # only when empty
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(name, dir_fd=pfd)
            except OSError:
                continue
            finally:
                os.close(pfd)
        for rel in sorted(parents, key=lambda s: -s.count("/")):
            *dirs, name = rel.split("/")
            pfd = _open_dir(root_fd, dirs)
            if pfd is None:
                continue
            try:
                dfd = os.open(name, _O_DIR, dir_fd=pfd)
                try:
                    st = os.fstat(dfd)
                    if os.listdir(dfd) or _opaque(dfd):
                        continue
                finally:
                    os.close(dfd)
                low = _lower_stat(lowers, rel)
                if low is None:
                    os.rmdir(name, dir_fd=pfd)          # created only to hold a stub
                elif (stat.S_ISDIR(low.st_mode) and stat.S_IMODE(low.st_mode) == stat.S_IMODE(st.st_mode)
                      and (low.st_uid, low.st_gid) == (st.st_uid, st.st_gid)):
                    os.rmdir(name, dir_fd=pfd)          # only copied up: the image's directory shows through
            except OSError:
                continue
            finally:
                os.close(pfd)
    finally:
        os.close(root_fd)
    return snapshot_into_store(store, upper, staging, pins)
