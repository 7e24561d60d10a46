"""rootless build as the unprivileged user: real namespaces, overlay, store, registry."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import RL, require
from tests.imgtools import store_consistent
from tests.integration.buildutil import image_files, write_context

pytestmark = pytest.mark.usefixtures("unprivileged")


def build(rl, ctx: Path, *args: str, check: bool = True):
    cp = rl("build", *args, str(ctx), timeout=600)
    if check and cp.returncode != 0:
        raise AssertionError(f"build failed ({cp.returncode}):\n{cp.stderr}")
    return cp


# ---------------------------------------------------------------------------
# the snapshot of an overlay upper dir

def _snapshot_job(store, staging: str):
    from rootless.build.filestep import mount_layers
    from rootless.build.snapshot import snapshot_into_store

    st = Path(staging)
    lower, upper, work, mnt, empty = (st / n for n in ("lower", "upper", "work", "mnt", "empty"))
    for d in (lower, upper, work, mnt, empty):
        d.mkdir()
    (lower / "gone.txt").write_text("x")
    (lower / "dir").mkdir()
    (lower / "dir" / "old").write_text("old")
    (lower / "keep").write_text("keep")
    mount_layers([str(lower)], str(mnt), str(st), str(empty), str(upper), str(work))
    os.unlink(mnt / "gone.txt")                       # -> whiteout
    import shutil

    shutil.rmtree(mnt / "dir")
    (mnt / "dir").mkdir()                             # -> opaque directory
    (mnt / "dir" / "new").write_text("new")
    (mnt / "owned").write_text("o")
    os.chown(mnt / "owned", 1000, 2000)
    os.chmod(mnt / "owned", 0o640)
    os.link(mnt / "owned", mnt / "hard")
    os.symlink("keep", mnt / "sym")
    from rootless import syscalls as sc

    sc.umount2(str(mnt), 0)
    from rootless.image.locks import Pins

    info = snapshot_into_store(store, str(upper), staging, Pins())
    layer = store.layer_path(info.diff_id) / "diff"
    wh = os.lstat(layer / "gone.txt")
    opaque = os.getxattr(layer / "dir", "user.overlay.opaque")
    other_xattrs = [x for p in (layer, layer / "dir", layer / "owned")
                    for x in os.listxattr(p) if x.startswith("user.overlay.") and x != "user.overlay.opaque"]
    return info, stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0, opaque, other_xattrs


def test_snapshot_whiteouts_opaque_owners(tmp_path):
    require("overlay")
    from rootless.config import load_config
    from rootless.image.locks import Staging
    from rootless.image.store import Store
    from rootless.userns import run_in_userns

    env = dict(os.environ, ROOTLESS_ROOT=str(tmp_path / "store"))
    store = Store(load_config(env))
    store.ensure_dirs()
    staging = Staging(store.root / "tmp")
    info, whiteout_kept, opaque, other = run_in_userns(_snapshot_job, store, str(staging.path))
    assert whiteout_kept and opaque == b"y" and other == []
    blob = store.blob_path(info.digest).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == info.digest and len(blob) == info.size
    import gzip

    tar = gzip.decompress(blob)
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == info.diff_id
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        ms = {m.name.rstrip("/"): m for m in tf.getmembers()}
    assert set(ms) == {".wh.gone.txt", "dir", "dir/.wh..wh..opq", "dir/new", "owned", "hard", "sym"}
    assert (ms["hard"].uid, ms["hard"].gid, ms["hard"].mode) == (1000, 2000, 0o640)
    assert ms["owned"].islnk() and ms["owned"].linkname == "hard", "sorted order: the first name has the data"
    assert ms["sym"].issym() and ms["sym"].linkname == "keep"
    assert ms["owned"].uname == "" and ms[".wh.gone.txt"].size == 0
    assert json.loads((store.layer_path(info.diff_id) / "layer.json").read_text())["diff_id"] == info.diff_id
    store.remove_trees([staging.path])


# ---------------------------------------------------------------------------
# COPY / ADD / WORKDIR builds

COPY_DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE
FROM ${BASE} AS base
ARG DIR=/srv
ENV APP=$DIR/app GREETING="hello world"
WORKDIR $APP
COPY a.txt ./
COPY --chown=nobody:nogroup --chmod=0640 conf/ /etc/conf/
COPY --chown=1000:1000 tree /tree
COPY <<EOF /etc/motd
$GREETING from ${APP}
EOF
COPY <<'RAW' ./raw.txt
$GREETING
RAW
ADD archive.tar.gz /opt/
USER 1000
WORKDIR /home/u
FROM scratch AS final
COPY --from=base /srv /srv
COPY --from=base /etc/motd /etc/conf /etc/
COPY --from=base /home /home
LABEL org.example.v=1
EXPOSE 8080
ENTRYPOINT ["/srv/app/a.txt"]
"""


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o755
            ti.uid = 42
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def copy_ctx(tmp_path):
    return write_context(tmp_path / "ctx", {
        "Dockerfile": COPY_DOCKERFILE,
        "a.txt": "A\n",
        "conf/app.conf": "k=v\n",
        "conf/secret.key": "do not ship\n",
        "tree/x/y.txt": "y\n",
        "tree/build.log": "noise\n",
        "archive.tar.gz": _tgz({"bin/tool": b"#!/bin/sh\necho tool\n"}),
        ".dockerignore": "**/*.log\nconf/*.key\n",
    })


def test_copy_build_files_owners_config(rl, registry, copy_ctx, tmp_path):
    require("overlay")
    base = registry.ref("busybox")
    cp = build(rl, copy_ctx, "-t", "copied:1", "--build-arg", f"BASE={base}", "--label", "cli=yes")
    iid = cp.stdout.strip().splitlines()[-1]
    assert iid.startswith("sha256:")
    cfg, files = image_files(rl, "copied:1", tmp_path)
    assert files["/srv/app/a.txt"]["data"] == b"A\n" and files["/srv/app/a.txt"]["uid"] == 0
    assert files["/etc/motd"]["data"] == b"hello world from /srv/app\n"
    assert files["/srv/app/raw.txt"]["data"] == b"$GREETING\n"
    # busybox: nobody = 65534, nogroup = 65534
    # a directory source copies its contents: /etc/conf/* lands in /etc/
    assert (files["/etc/app.conf"]["uid"], files["/etc/app.conf"]["gid"]) == (65534, 65534)
    assert files["/etc/app.conf"]["mode"] == 0o640
    assert "/etc/secret.key" not in files and "/etc/conf" not in files, ".dockerignore, dir contents"
    assert "/srv/app" in files and files["/srv/app"]["type"] == "dir"
    assert "/home/u" in files and (files["/home/u"]["uid"], files["/home/u"]["gid"]) == (1000, 1000)
    assert "/tree" not in files          # not copied to the final stage
    assert not any(p.startswith("/bin/") for p in files), "final stage is FROM scratch"
    c = cfg["config"]
    assert c["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert c["Entrypoint"] == ["/srv/app/a.txt"] and c["ExposedPorts"] == {"8080/tcp": {}}
    assert c["Labels"] == {"org.example.v": "1", "cli": "yes"} and c["WorkingDir"] == "/"
    assert cfg["architecture"] and cfg["os"] == "linux"
    assert len(cfg["rootfs"]["diff_ids"]) == 3
    assert [h.get("empty_layer", False) for h in cfg["history"]] == [False, False, False, True, True, True]
    assert [h["created_by"] for h in cfg["history"][:3]] == [
        "COPY /srv /srv # buildkit", "COPY /etc/motd /etc/conf /etc/ # buildkit", "COPY /home /home # buildkit"
    ], "BuildKit's history line of COPY --from has no --from"
    # the base stage itself, through --target
    cp = build(rl, copy_ctx, "-t", "copied:base", "--target", "base", "--build-arg", f"BASE={base}")
    cfg, files = image_files(rl, "copied:base", tmp_path)
    assert cfg["config"]["User"] == "1000" and cfg["config"]["WorkingDir"] == "/home/u"
    assert "APP=/srv/app" in cfg["config"]["Env"] and "GREETING=hello world" in cfg["config"]["Env"]
    assert not any(e.startswith("DIR=") for e in cfg["config"]["Env"]), "ARG values stay out of the config"
    assert files["/tree/x/y.txt"]["uid"] == 1000 and "/tree/build.log" not in files
    assert files["/opt/bin/tool"]["mode"] == 0o755 and files["/opt/bin/tool"]["uid"] == 42
    assert "/bin/busybox" in files
    hist = [h["created_by"] for h in cfg["history"]]
    assert "WORKDIR /srv/app" in hist and "COPY a.txt ./ # buildkit" in hist
    # skopeo (an independent reader) accepts what we store and export
    out = tmp_path / "docker.tar"
    rl.ok("save", "-o", str(out), "copied:1")
    sk = subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{out}"], capture_output=True, text=True)
    assert sk.returncode == 0, sk.stderr
    assert json.loads(sk.stdout)["config"]["Labels"] == {"org.example.v": "1", "cli": "yes"}


def test_cache_rebuild_and_invalidation(rl, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "c", {
        "Dockerfile": "FROM scratch\nCOPY one /one\nCOPY two /two\nWORKDIR /w\nCOPY three /three\n",
        "one": "1", "two": "2", "three": "3"})
    first = build(rl, ctx, "-t", "cache:t")
    assert "Using cache" not in first.stderr
    again = build(rl, ctx, "-t", "cache:t")
    assert again.stderr.count("--> Using cache") == 4
    assert again.stdout.strip() == first.stdout.strip(), "a fully cached rebuild is the same image"
    (ctx / "two").write_text("2 changed")
    third = build(rl, ctx, "-t", "cache:t")
    lines = third.stderr.splitlines()
    i = next(n for n, line in enumerate(lines) if "COPY two /two" in line)
    assert "Using cache" in lines[i - 1] or "Using cache" in "\n".join(lines[:i])
    assert not any("Using cache" in line for line in lines[i:]), "everything from the changed COPY runs again"
    os.utime(ctx / "three", (1, 1))
    fourth = build(rl, ctx, "-t", "cache:t")
    assert fourth.stderr.count("--> Using cache") == 4, "a new mtime alone does not invalidate (BuildKit)"
    nc = build(rl, ctx, "--no-cache")
    assert "Using cache" not in nc.stderr
    # rmi and image prune keep the cached layers: the next build takes them again
    rl.ok("rmi", "cache:t")
    rl.ok("image", "prune", "-a", "-f")
    after = build(rl, ctx, "-t", "cache:t")
    assert after.stderr.count("--> Using cache") == 4


# ---------------------------------------------------------------------------
# GC (rmi, image prune) while a build runs

GATED_DOCKERFILE = """\
FROM {base}
COPY f /f
RUN --mount=type=bind,source=gate,target=/gate cat /gate/fifo > /out
CMD ["cat", "/f", "/out"]
"""


def _until(cond, p: subprocess.Popen, what: str, seconds: float = 300):
    """Wait for ``cond()`` (true or a value) while the build ``p`` runs."""
    deadline = time.monotonic() + seconds
    while True:
        v = cond()
        if v:
            return v
        assert p.poll() is None, f"the build ended (status {p.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {seconds}s"
        time.sleep(0.05)


def _fifo_writer(fifo: Path):
    """A write end of ``fifo`` once somebody reads it, else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return None
        raise


def _layers_present(root: Path, diff_ids) -> list[str]:
    return [d for d in diff_ids if (root / "layers" / d[7:] / "layer.json").is_file()]


def _finish_gated(p, writer, fifo, log) -> tuple[int, str]:
    """End the gated build ``p``: let a RUN that waits on the fifo end, wait, return (status, output)."""
    if writer is None and p.poll() is None:
        try:
            writer = _until(lambda: _fifo_writer(fifo), p, "RUN step reading the fifo")
        except AssertionError:
            pass
    if writer is not None:
        os.close(writer)
    rc = p.wait(timeout=600)
    log.seek(0)
    out = log.read()
    log.close()
    return rc, out


def test_rmi_and_prune_during_a_build_keep_what_it_made_and_uses(rl, registry, tmp_path):
    """rmi of the base image and image prune -a while a build runs: the layer a step has just made
    visible (in the namespace child, before the builder records it), the base image's layers and the
    earlier steps' layers stay until the build's image is recorded; the build succeeds and runs."""
    require("overlay")
    base = registry.ref("busybox")
    ctx = write_context(tmp_path / "gc", {"Dockerfile": GATED_DOCKERFILE.format(base=base), "f": "copied\n",
                                          "gate/.keep": ""})
    os.utime(ctx / "f", (1_600_000_000, 1_600_000_000))
    fifo = ctx / "gate" / "fifo"
    os.mkfifo(fifo)
    # the layer of `COPY f /f` is the same in every store (the file's content, mode and time): a
    # build in another store tells its digests
    probe = RL(tmp_path / "probe")
    try:
        pctx = write_context(tmp_path / "probe-ctx", {"Dockerfile": "FROM scratch\nCOPY f /f\n"})
        shutil.copy2(ctx / "f", pctx / "f")
        build(probe, pctx, "-t", "probe")
        (img,) = json.loads((probe.root / "images.json").read_text())["images"].values()
        (copy_layer,), (copy_blob,) = img["layers"], [b["digest"] for b in img["blobs"]]
    finally:
        probe.cleanup()
    rl.ok("pull", "-q", base)
    base_layers = json.loads(rl.ok("image", "inspect", base))[0]["RootFS"]["Layers"]
    blob = rl.root / "blobs" / "sha256" / copy_blob[7:]
    # holding the COPY layer's extraction lock stops its snapshot after the blob is visible, before
    # the layer is: the window between the child making content visible and the builder using it
    lock = rl.root / "locks" / f"layer-{copy_layer[7:]}"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    log = open(tmp_path / "build.log", "w+")
    p = rl.popen("build", "-t", "gc:1", str(ctx), stdout=log, stderr=subprocess.STDOUT)
    writer = None
    try:
        _until(blob.is_file, p, "blob of the COPY step")
        rl.ok("rmi", base)
        rl.ok("image", "prune", "-a", "-f")
        assert blob.is_file(), "GC removed the blob of the layer the build was making"
        assert _layers_present(rl.root, base_layers) == base_layers, "GC removed the base image's layers"
        os.close(lock_fd)
        lock_fd = -1
        # the RUN reads the fifo: it runs until the test writes
        writer = _until(lambda: _fifo_writer(fifo), p, "RUN step reading the fifo")
        rl.ok("image", "prune", "-a", "-f")
        assert _layers_present(rl.root, base_layers + [copy_layer]) == base_layers + [copy_layer]
        assert blob.is_file()
        os.write(writer, b"gated\n")
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
        rc, out = _finish_gated(p, writer, fifo, log)
    assert rc == 0, out
    assert rl.ok("run", "--rm", "gc:1") == "copied\ngated\n"
    assert store_consistent(rl.root) == []

    # a build that takes the COPY from the cache keeps it while the cache is dropped meanwhile
    from rootless.build.cache import prune as prune_cache
    from rootless.config import load_config
    from rootless.image.store import Store

    (ctx / "Dockerfile.two").write_text(GATED_DOCKERFILE.format(base=base).replace("/out", "/out2"))
    log = open(tmp_path / "build2.log", "w+")
    p = rl.popen("build", "-t", "gc:2", "-f", str(ctx / "Dockerfile.two"), str(ctx), stdout=log,
                 stderr=subprocess.STDOUT)
    writer = None
    try:
        writer = _until(lambda: _fifo_writer(fifo), p, "RUN step reading the fifo")
        assert prune_cache(Store(load_config(rl.env)))[0] >= 2
        assert _layers_present(rl.root, base_layers + [copy_layer]) == base_layers + [copy_layer]
        assert blob.is_file()
        os.write(writer, b"again\n")
    finally:
        rc, out = _finish_gated(p, writer, fifo, log)
    assert rc == 0, out
    assert "STEP 2/4: COPY f /f\n--> Using cache" in out
    assert rl.ok("run", "--rm", "gc:2") == "copied\nagain\n"
    assert store_consistent(rl.root) == []
    # nothing stays pinned: without the images (and the dropped cache entry) their layers go
    rl.ok("rmi", "gc:1", "gc:2")
    rl.ok("image", "prune", "-a", "-f")
    assert _layers_present(rl.root, base_layers + [copy_layer]) == []


def test_symbolic_chmod(rl, tmp_path):
    """COPY --chmod=u+x / go-w / +x: relative to each file's own mode (BuildKit); a bad one names the line."""
    require("overlay")
    ctx = write_context(tmp_path / "sym", {"Dockerfile": "FROM scratch\nCOPY --chmod=u+x run.sh /bin/\n"
                                                         "COPY --chmod=go-w tree /tree/\nCOPY --chmod=+x lib /lib/\n",
                                           "run.sh": "#!/bin/sh\n", "tree/f": "f", "lib/l": "l"})
    os.chmod(ctx / "run.sh", 0o640)
    os.chmod(ctx / "tree", 0o777)
    os.chmod(ctx / "tree" / "f", 0o666)
    os.chmod(ctx / "lib" / "l", 0o604)
    build(rl, ctx, "-t", "symchmod:1")
    _, files = image_files(rl, "symchmod:1", tmp_path)
    assert files["/bin/run.sh"]["mode"] == 0o740
    assert files["/tree/f"]["mode"] == 0o644
    assert files["/lib/l"]["mode"] == 0o715, "+x: every class but the umask's (022) bits"
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY --chmod=u+q run.sh /bin/\n")
    cp = rl("build", str(ctx))
    assert cp.returncode == 125 and "Dockerfile:2: COPY: invalid chmod parameter: 'u+q'" in cp.stderr


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, link, data in members:
            ti = tarfile.TarInfo(name)
            if link:
                ti.type, ti.linkname = tarfile.SYMTYPE, link
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_add_archive_cannot_write_outside_its_destination(rl, tmp_path):
    """SECURITY: ADD of a local tar stays in its destination, as Docker's chrooted extraction: an entry
    through a symlink to /etc, or named ../../x, fails the step (naming the line) instead of landing
    in /etc or being moved."""
    require("overlay")
    ctx = write_context(tmp_path / "evil", {
        "Dockerfile": "FROM scratch\nCOPY passwd /etc/passwd\nADD evil.tar /opt/\n", "passwd": "root:x:0:0\n",
        "evil.tar": _tar([("lnk", "/etc", b""), ("lnk/passwd-over", "", b"pwned")]),
        "escape.tar": _tar([("../../escape.txt", "", b"out")]),
        "ok.tar": _tar([("lnk", "/etc", b""), ("sub/f", "", b"in")])})
    cp = rl("build", "-t", "evil:1", str(ctx))
    assert cp.returncode == 125, cp.stderr
    assert "Dockerfile:3: ADD evil.tar /opt/" in cp.stderr and "symlink /opt/lnk -> /etc" in cp.stderr
    assert "Traceback" not in cp.stderr and rl("image", "inspect", "evil:1").returncode != 0
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY passwd /etc/passwd\nADD escape.tar /opt/\n")
    cp = rl("build", str(ctx))
    assert cp.returncode == 125 and "Dockerfile:3" in cp.stderr
    assert "entry '../../escape.txt' climbs out of the destination /opt" in cp.stderr
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY passwd /etc/passwd\nADD ok.tar /opt/\n")
    build(rl, ctx, "-t", "evil:ok")
    _, files = image_files(rl, "evil:ok", tmp_path)
    assert files["/opt/lnk"] == {"type": "link", "mode": 0o777, "uid": 0, "gid": 0, "target": "/etc"}
    assert files["/opt/sub/f"]["data"] == b"in" and sorted(p for p in files if p.startswith("/etc")) == [
        "/etc", "/etc/passwd"]


# ---------------------------------------------------------------------------
# bad input

def test_syntax_error_names_file_line_instruction(rl, tmp_path):
    ctx = write_context(tmp_path / "e", {"Dockerfile.bad": "FROM scratch\n\nCOPY --chownn=1 a /a\n", "a": "x"})
    cp = rl("build", "-f", str(ctx / "Dockerfile.bad"), str(ctx))
    assert cp.returncode == 125
    err = cp.stderr
    assert "Dockerfile.bad:3: COPY: unknown flag: --chownn" in err and "Traceback" not in err
    cp = rl("build", "-f", str(ctx / "Dockerfile.bad"), str(ctx))
    (ctx / "Dockerfile").write_text("FROM scratch\nRUNN echo\n")
    cp = rl("build", str(ctx))
    assert cp.returncode == 125 and "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)" in cp.stderr


def test_missing_copy_source_names_path_and_keeps_tag(rl, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "m", {"Dockerfile": "FROM scratch\nCOPY present /p\n", "present": "x",
                                         ".dockerignore": "ignored\n", "ignored": "i"})
    good = build(rl, ctx, "-t", "keep:me").stdout.strip()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY present /p\nCOPY nothere/file.txt /x\n")
    cp = rl("build", "-t", "keep:me", "-t", "new:tag", str(ctx))
    assert cp.returncode != 0
    assert "/nothere/file.txt: not found" in cp.stderr and "Dockerfile:3" in cp.stderr
    assert json.loads(rl.ok("image", "inspect", "keep:me"))[0]["Id"] == good, "the tag did not move"
    assert rl("image", "inspect", "new:tag").returncode != 0, "no tag was created"
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY ignored /x\n")
    cp = rl("build", str(ctx))
    assert cp.returncode != 0 and "/ignored is excluded by .dockerignore" in cp.stderr


# ---------------------------------------------------------------------------
# rootless build -: a tar of the context, or a Dockerfile alone, on stdin

def stdin_build(rl, data: bytes, *args: str) -> subprocess.CompletedProcess:
    """``rootless build ARGS`` with ``data`` on stdin; stdout and stderr as text."""
    cp = rl("build", *args, input=data, timeout=600)
    return subprocess.CompletedProcess(cp.args, cp.returncode, cp.stdout.decode(), cp.stderr.decode())


def test_stdin_tar_is_the_context(rl, tmp_path):
    """`tar -c . | rootless build -` (gzip, zstd too): the tar is the context (Docker), -f is inside it."""
    require("overlay")
    ctx = write_context(tmp_path / "c", {"Dockerfile": "FROM scratch\nCOPY . /ctx/\n", "sub/f": "hi\n",
                                         "sub/Alt": "FROM scratch\nCOPY sub/f /alt\n", "ro/g": "ro\n",
                                         ".dockerignore": "ignored\n", "ignored": "no\n"})
    os.chmod(ctx / "ro", 0o555)
    try:
        plain = subprocess.run(["tar", "-C", str(ctx), "-cf", "-", "."], capture_output=True, check=True).stdout
        gz = subprocess.run(["tar", "-C", str(ctx), "-czf", "-", "."], capture_output=True, check=True).stdout
        zst = subprocess.run(["tar", "-C", str(ctx), "--zstd", "-cf", "-", "."], capture_output=True,
                             check=True).stdout
    finally:
        os.chmod(ctx / "ro", 0o755)
    cp = stdin_build(rl, plain, "-t", "stdin:tar", "-")
    assert cp.returncode == 0, cp.stderr
    _, files = image_files(rl, "stdin:tar", tmp_path)
    assert files["/ctx/sub/f"]["data"] == b"hi\n" and files["/ctx/ro/g"]["data"] == b"ro\n"
    assert files["/ctx/Dockerfile"]["data"] == b"FROM scratch\nCOPY . /ctx/\n"
    assert files["/ctx/ro"]["mode"] == 0o555 and "/ctx/ignored" not in files, ".dockerignore of the tar"
    for data in (gz, zst):
        cp = stdin_build(rl, data, "-q", "-")
        assert cp.returncode == 0 and cp.stdout.strip() == rl.ok("image", "inspect", "-f", "{{.Id}}",
                                                                  "stdin:tar").strip(), cp.stderr
    cp = stdin_build(rl, gz, "-t", "stdin:alt", "-f", "sub/Alt", "-")
    assert cp.returncode == 0, cp.stderr
    assert image_files(rl, "stdin:alt", tmp_path)[1]["/alt"]["data"] == b"hi\n"
    assert not [p for p in (rl.root / "tmp").iterdir()], "the extracted context is removed"
    cp = stdin_build(rl, plain, "-f", "nope/Dockerfile", "-")
    assert cp.returncode == 125 and "the build context from stdin has no nope/Dockerfile" in cp.stderr


def test_stdin_hostile_tar_is_refused(rl, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    cp = stdin_build(rl, _tar([("Dockerfile", "", b"FROM scratch\n"), ("lnk", str(outside), b""),
                               ("lnk/planted", "", b"x")]), "-")
    assert cp.returncode == 125 and "the build context on stdin: hostile archive" in cp.stderr, cp.stderr
    cp = stdin_build(rl, _tar([("../../escape", "", b"x")]), "-")
    assert cp.returncode == 125 and "climbs out" in cp.stderr
    assert os.listdir(outside) == [] and not (tmp_path / "escape").exists()
    assert not [p for p in (rl.root / "tmp").iterdir()], "the partial context is removed"


def test_stdin_dockerfile_has_no_context(rl, tmp_path):
    """A Dockerfile on stdin has no context: COPY says so (Docker), and names no temporary directory."""
    require("overlay")
    cp = stdin_build(rl, b"FROM scratch\nCOPY x /x\n", "-")
    assert cp.returncode == 125 and "Traceback" not in cp.stderr
    assert "Dockerfile:2: COPY x /x: /x: not found: there is no build context when the Dockerfile comes from " \
           "stdin" in cp.stderr and "rootless-build-" not in cp.stderr
    assert "tar -c . | rootless build -" in cp.stderr
    cp = stdin_build(rl, b"FROM scratch\nCOPY <<EOF /greeting\nhello\nEOF\n", "-q", "-")
    assert cp.returncode == 0, cp.stderr


# ---------------------------------------------------------------------------
# outputs, manifest lists

def test_unreadable_context_paths_fail_the_copy_naming_them(rl, tmp_path):
    """An unreadable directory is not copied as an empty one; the error names the path and the line."""
    require("overlay")
    ctx = write_context(tmp_path / "u", {"Dockerfile": "FROM scratch\nCOPY ok /ok\nCOPY . /all/\n", "ok/f": "f",
                                         "secret/key": "k", "locked.txt": "l"})
    os.chmod(ctx / "secret", 0)
    try:
        cp = rl("build", str(ctx))
        assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
        assert "Dockerfile:3: COPY . /all/: build context: cannot read the directory /secret: permission " \
               "denied" in cp.stderr
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY ok /ok\n")
        build(rl, ctx, "-t", "unreadable:ok")                  # COPY of other paths keeps working
        os.chmod(ctx / "secret", 0o755)
        os.chmod(ctx / "locked.txt", 0)
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY ok /ok\nCOPY locked.txt /l\n")
        cp = rl("build", str(ctx))
        assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
        assert "Dockerfile:3: COPY locked.txt /l: build context: cannot read /locked.txt: Permission denied" \
               in cp.stderr
    finally:
        os.chmod(ctx / "secret", 0o755)
        os.chmod(ctx / "locked.txt", 0o644)


def test_output_archives_and_iidfile(rl, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "o", {"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "content"})
    da, oa, iid = tmp_path / "img-docker.tar", tmp_path / "img-oci.tar", tmp_path / "iid"
    cp = build(rl, ctx, "-t", "out:1", "--iidfile", str(iid), "--output", f"type=docker-archive,dest={da}",
               "-o", f"type=oci-archive,dest={oa}")
    assert iid.read_text() == cp.stdout.strip()
    layout = tmp_path / "layout"
    with tarfile.open(oa) as tf:     # skopeo's oci-archive: would chown as root; read the layout instead
        for m in tf.getmembers():
            assert not m.name.startswith("/") and ".." not in m.name.split("/")
        tf.extractall(layout)
    for ref in (f"docker-archive:{da}", f"oci:{layout}"):
        sk = subprocess.run(["skopeo", "inspect", ref], capture_output=True, text=True)
        assert sk.returncode == 0, sk.stderr
        assert "sha256:" + hashlib.sha256(b"").hexdigest() not in sk.stdout
    # loadable by another tool: skopeo copy reads every blob, checks its digest and size, writes them again
    oci_dir, plain_dir = tmp_path / "copied-oci", tmp_path / "copied-dir"
    for src, dest in ((f"docker-archive:{da}", f"oci:{oci_dir}:copied"), (f"oci:{layout}", f"dir:{plain_dir}")):
        sk = subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", src, dest], capture_output=True,
                            text=True, env=dict(os.environ, TMPDIR=str(tmp_path)))
        assert sk.returncode == 0, sk.stderr
    index = json.loads((oci_dir / "index.json").read_text())
    manifests = [json.loads((oci_dir / "blobs" / "sha256" / d["digest"][7:]).read_bytes())
                 for d in index["manifests"]]
    manifests.append(json.loads((plain_dir / "manifest.json").read_text()))
    for man, blobs in zip(manifests, (oci_dir / "blobs" / "sha256", plain_dir)):
        assert man["config"]["digest"] == cp.stdout.strip(), "the same config: the same image ID"
        (layer,) = man["layers"]
        with tarfile.open(blobs / layer["digest"][7:]) as tf:
            assert tf.extractfile("f").read() == b"content"
    cp = rl("build", "-o", "type=local,dest=x", str(ctx))
    assert cp.returncode == 125 and "unsupported --output type 'local'" in cp.stderr


def test_quiet_prints_only_the_id(rl, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "q", {"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "x"})
    cp = build(rl, ctx, "-q")
    assert cp.stdout.strip().startswith("sha256:") and len(cp.stdout.strip().splitlines()) == 1
    assert "STEP" not in cp.stderr


def test_manifest_commands(rl, registry, tmp_path):
    require("overlay")
    src = registry.ref("busybox")
    rl.ok("pull", "--platform", "linux/amd64", src)
    rl.ok("pull", "--platform", "linux/arm64", src)
    rl.ok("manifest", "create", "mylist:v1")
    rl.ok("manifest", "add", "--platform", "linux/amd64", "mylist:v1", src)
    rl.ok("manifest", "add", "--arch", "arm64", "mylist:v1", src)
    idx = json.loads(rl.ok("manifest", "inspect", "mylist:v1"))
    assert sorted(m["platform"]["architecture"] for m in idx["manifests"]) == ["amd64", "arm64"]
    dest = registry.ref("pushed-list", "v1")
    digest = rl.ok("manifest", "push", "--rm", "mylist:v1", dest).strip()
    assert rl("manifest", "inspect", "mylist:v1").returncode != 0
    sk = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"],
                        capture_output=True, text=True)
    assert sk.returncode == 0, sk.stderr
    remote = json.loads(sk.stdout)
    assert "sha256:" + hashlib.sha256(sk.stdout.encode()).hexdigest() == digest
    assert sorted(m["platform"]["architecture"] for m in remote["manifests"]) == ["amd64", "arm64"]
    assert len(json.loads(rl.ok("manifest", "inspect", src))["manifests"]) == 2, "a pulled index is a list too"
    single = registry.ref("layered")
    rl.ok("pull", single)
    cp = rl("manifest", "inspect", single)
    assert cp.returncode == 125 and "is an image, not a manifest list" in cp.stderr
    cp = rl("manifest", "inspect", "nope:1")
    assert cp.returncode == 125 and "nope:1: no such manifest list" in cp.stderr
    # manifest rm: the list goes, its images stay; a bad name removes nothing
    rl.ok("manifest", "create", "--all", "mylist:v2", src)
    cp = rl("manifest", "rm", "mylist:v2", "nope:1")
    assert cp.returncode == 125 and "nope:1: no such manifest list" in cp.stderr
    assert len(json.loads(rl.ok("manifest", "inspect", "mylist:v2"))["manifests"]) == 2
    cp = rl("manifest", "rm", single)
    assert cp.returncode == 125 and "is an image, not a manifest list" in cp.stderr
    assert rl.ok("manifest", "rm", "mylist:v2") == "Untagged: mylist:v2\n"
    cp = rl("manifest", "inspect", "mylist:v2")
    assert cp.returncode == 125 and "no such manifest list" in cp.stderr
    assert rl("image", "inspect", "mylist:v2").returncode != 0
    assert rl.ok("run", "--rm", src, "echo", "member image kept") == "member image kept\n"


# ---------------------------------------------------------------------------
# RUN: the whole thing

MULTI_STAGE = """\
ARG BASE
FROM ${BASE} AS builder
ARG VERSION=1.0
ENV OUT=/out APP_VERSION=$VERSION
WORKDIR /src
COPY . .
RUN mkdir -p $OUT && tr a-z A-Z < input.txt > $OUT/upper.txt && echo "$APP_VERSION" > $OUT/version \\
    && ls -A /src > $OUT/context-files
RUN <<EOF
set -e
echo "heredoc for ${APP_VERSION} in $(pwd)" > $OUT/heredoc.txt
rm -f /bin/zcat
EOF

FROM ${BASE}
ARG VERSION
ENV APP_VERSION=${VERSION:-unknown}
RUN echo "app:x:1000:1000::/home/app:/bin/sh" >> /etc/passwd && echo "app:x:1000:" >> /etc/group \\
    && mkdir -p /home/app && chown 1000:1000 /home/app
WORKDIR /app
COPY --from=builder --chown=app:app /out/ ./
USER app
RUN id -u > /home/app/whoami && echo "$HOME" > /home/app/home
EXPOSE 8000
CMD ["cat", "/app/upper.txt"]
"""


def test_multistage_run_build_and_run(rl, registry, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "ms", {
        "Dockerfile": MULTI_STAGE, "input.txt": "hello rootless\n", "secret.txt": "nope\n", "scratch.tmp": "x",
        ".dockerignore": "secret.txt\n*.tmp\n"})
    base = registry.ref("busybox")
    cp = build(rl, ctx, "-t", "ms:1", "--build-arg", f"BASE={base}", "--build-arg", "VERSION=2.0")
    assert "STEP" in cp.stderr
    out = rl.ok("run", "--rm", "ms:1")
    assert out == "HELLO ROOTLESS\n"
    assert rl.ok("run", "--rm", "ms:1", "cat", "/app/version", "/app/heredoc.txt") == \
        "2.0\nheredoc for 2.0 in /src\n"
    assert rl.ok("run", "--rm", "ms:1", "sh", "-c", "id -u; pwd; echo $APP_VERSION") == "1000\n/app\n2.0\n"
    cfg, files = image_files(rl, "ms:1", tmp_path)
    c = cfg["config"]
    assert c["User"] == "app" and c["WorkingDir"] == "/app" and c["Cmd"] == ["cat", "/app/upper.txt"]
    assert "APP_VERSION=2.0" in c["Env"] and not any(e.startswith(("VERSION=", "OUT=")) for e in c["Env"])
    assert c["ExposedPorts"] == {"8000/tcp": {}}
    assert files["/app/upper.txt"]["uid"] == 1000 and files["/app/upper.txt"]["gid"] == 1000
    assert files["/app/context-files"]["data"].split() == [b".dockerignore", b"Dockerfile", b"input.txt"]
    assert files["/home/app/whoami"]["data"] == b"1000\n" and files["/home/app/whoami"]["uid"] == 1000
    assert files["/home/app/home"]["data"] == b"/home/app\n"
    assert "/bin/zcat" in files, "the builder stage's rm does not touch the final stage"
    for stub in ("/proc", "/sys", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
        assert stub not in files or stub in ("/proc", "/sys"), f"mount stub {stub} leaked into a layer"
    hist = [h["created_by"] for h in cfg["history"]]
    assert any(h.startswith("RUN |1 VERSION=2.0 /bin/sh -c echo \"app:x:1000") for h in hist)
    # the builder stage: the RUN heredoc removed a file (whiteout) and the ignored files never got in
    cfg_b, files_b = image_files(rl, build(rl, ctx, "--target", "builder", "--build-arg", f"BASE={base}",
                                           "-t", "ms:builder").stdout.strip() and "ms:builder", tmp_path)
    assert "/bin/zcat" not in files_b and "/src/secret.txt" not in files_b and "/src/input.txt" in files_b
    assert "APP_VERSION=1.0" in cfg_b["config"]["Env"]
    # a rebuild: every step from the cache, the same image
    again = build(rl, ctx, "-t", "ms:1", "--build-arg", f"BASE={base}", "--build-arg", "VERSION=2.0")
    assert again.stdout.strip() == cp.stdout.strip()
    n_steps = again.stderr.count("--> Using cache")
    assert n_steps == 8 and "--> " not in again.stderr.replace("--> Using cache", "")
    # touching (changing) one copied file rebuilds from its COPY on
    (ctx / "input.txt").write_text("changed\n")
    third = build(rl, ctx, "-t", "ms:1", "--build-arg", f"BASE={base}", "--build-arg", "VERSION=2.0")
    # cached: the builder's WORKDIR, the final stage's RUN and WORKDIR (they do not read the builder)
    assert third.stderr.count("--> Using cache") == 3
    lines = third.stderr.splitlines()
    i = next(n for n, line in enumerate(lines) if "COPY . ." in line)
    assert "Using cache" not in lines[i + 1]
    assert rl.ok("run", "--rm", "ms:1") == "CHANGED\n"


def test_failing_run_names_step_command_status(rl, registry, tmp_path):
    require("overlay")
    base = registry.ref("busybox")
    ctx = write_context(tmp_path / "f", {"Dockerfile": f"FROM {base}\nRUN echo fine > /fine\n"})
    good = build(rl, ctx, "-t", "fail:t").stdout.strip()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN echo fine > /fine\n\nRUN echo about to fail && exit 3\n"
                                    f"RUN echo never\n")
    cp = rl("build", "-t", "fail:t", "-t", "fail:new", str(ctx))
    assert cp.returncode == 1
    assert "about to fail" in cp.stderr
    assert ("Dockerfile:4: RUN echo about to fail && exit 3: process \"/bin/sh -c echo about to fail && exit 3\" "
            "did not complete successfully: exit code: 3") in cp.stderr
    assert "never" not in cp.stderr.replace("RUN echo never", "")
    assert json.loads(rl.ok("image", "inspect", "fail:t"))[0]["Id"] == good
    assert rl("image", "inspect", "fail:new").returncode != 0
    cp = rl("build", "-q", str(ctx))
    assert cp.returncode == 1 and "about to fail" in cp.stderr and "its last output" in cp.stderr
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN /no/such/program\n")
    cp = rl("build", str(ctx))
    assert cp.returncode == 1 and "exit code: 127" in cp.stderr


# ---------------------------------------------------------------------------
# peer check: Buildah (Debian) builds the same Dockerfile into the same files and config

PEER_DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS builder
ARG VERSION=1.0
ENV OUT=/out APP_VERSION=$VERSION
WORKDIR /src
COPY . .
RUN mkdir -p $OUT && tr a-z A-Z < input.txt > $OUT/upper.txt && echo "$APP_VERSION" > $OUT/version \\
    && rm -f /bin/zcat
FROM ${BASE}
ARG VERSION
ENV APP_VERSION=${VERSION:-unknown}
RUN echo "app:x:1000:1000::/home/app:/bin/sh" >> /etc/passwd && echo "app:x:1000:" >> /etc/group \\
    && mkdir -p /home/app && chown 1000:1000 /home/app && rm /bin/zcat && rm -r /etc/removed-me
WORKDIR /app
COPY --from=builder --chown=app:app /out/ ./
COPY --chmod=0600 input.txt /etc/input
COPY conf /etc/conf/
USER app
RUN id -u > /home/app/whoami && ln -s /app/upper.txt /home/app/link
VOLUME /data
EXPOSE 8000 9000/udp
LABEL org.example=peer
STOPSIGNAL SIGQUIT
ENTRYPOINT ["cat"]
CMD ["/app/upper.txt"]
"""

# mount points Buildah's chroot isolation leaves in its layers (not part of the Dockerfile's result)
BUILDAH_STUBS = ("/proc", "/sys", "/dev", "/run", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "Volumes", "StopSignal")


def test_peer_buildah_same_files_and_config(rl, registry, tmp_path):
    require("overlay")
    import shutil

    buildah = shutil.which("buildah")
    assert buildah, "buildah (Debian package) is needed for the peer check: apt-get install buildah"
    ctx = write_context(tmp_path / "peer", {
        "Dockerfile": PEER_DOCKERFILE, "input.txt": "hello peer\n", "conf/a.conf": "a\n", "conf/sub/b.conf": "b\n",
        "secret.txt": "s", ".dockerignore": "secret.txt\n"})
    args = ["--build-arg", f"BASE={registry.ref('busybox')}", "--build-arg", "VERSION=2.0"]
    build(rl, ctx, "-t", "peer:rl", *args)
    cfg_rl, files_rl = image_files(rl, "peer:rl", tmp_path)

    broot = tmp_path / "buildah"
    base_cmd = [buildah, "--root", str(broot / "root"), "--runroot", str(broot / "run"), "--storage-driver", "vfs"]
    env = dict(os.environ, HOME=str(tmp_path / "bhome"), XDG_RUNTIME_DIR=str(broot / "xdg"))
    (broot / "xdg").mkdir(parents=True, mode=0o700)
    try:
        cp = subprocess.run(base_cmd + ["bud", "--isolation", "chroot", "--tls-verify=false", "--identity-label=false",
                                        *args, "-t", "peer:bh", str(ctx)],
                            env=env, capture_output=True, text=True, timeout=600)
        assert cp.returncode == 0, cp.stderr[-3000:]
        arch = tmp_path / "bh.tar"
        cp = subprocess.run(base_cmd + ["push", "peer:bh", f"docker-archive:{arch}:peer:bh"], env=env,
                            capture_output=True, text=True, timeout=600)
        assert cp.returncode == 0, cp.stderr[-3000:]
    finally:
        subprocess.run(base_cmd + ["unshare", "rm", "-rf", str(broot / "root"), str(broot / "run")], env=env,
                       capture_output=True, timeout=120)
    from tests.integration.buildutil import archive_image, merged_files

    cfg_bh, layers = archive_image(arch)
    files_bh = {k: v for k, v in merged_files(layers).items()
                if k not in BUILDAH_STUBS or k in files_rl}
    assert sorted(files_rl) == sorted(files_bh)
    for path in files_rl:
        assert files_rl[path] == files_bh[path], path
    for key in CONFIG_KEYS:
        assert cfg_rl["config"].get(key) == cfg_bh["config"].get(key), key
    assert cfg_rl["architecture"] == cfg_bh["architecture"] and cfg_rl["os"] == cfg_bh["os"]
    # and both say the same about the content we care about
    assert files_rl["/app/upper.txt"]["data"] == b"HELLO PEER\n" and files_rl["/etc/input"]["mode"] == 0o600
    assert "/bin/zcat" not in files_rl and "/etc/removed-me" not in files_rl


# ---------------------------------------------------------------------------
# ADD from a URL, RUN --mount, --network, ONBUILD, SHELL, HEALTHCHECK

@pytest.fixture
def http_server(tmp_path):
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_add_url_mounts_network_onbuild_shell(rl, registry, tmp_path, http_server):
    require("overlay")
    www, url = http_server
    (www / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    digest = "sha256:" + hashlib.sha256(b"#!/bin/sh\necho tool\n").hexdigest()
    base = registry.ref("busybox")
    ctx = write_context(tmp_path / "more", {
        "Dockerfile": f"""\
FROM {base} AS parent
ONBUILD RUN echo triggered > /onbuild
FROM parent
ADD --checksum={digest} {url}/tool.sh /usr/local/bin/
ADD {url}/tool.sh /named
RUN --mount=type=cache,target=/cache sh -c 'echo x >> /cache/runs; wc -l < /cache/runs > /cache-count'
RUN --mount=type=bind,source=data,target=/in cat /in/d.txt > /from-bind
RUN --mount=type=tmpfs,target=/scratch touch /scratch/gone && ls /scratch > /tmpfs-list
RUN --network=none sh -c 'grep -c : /proc/net/dev > /ifaces'
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "shell: $0" > /shell
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
STOPSIGNAL SIGQUIT
""", "data/d.txt": "bound\n"})
    build(rl, ctx, "-t", "more:1")
    cfg, files = image_files(rl, "more:1", tmp_path)
    assert files["/onbuild"]["data"] == b"triggered\n"
    assert files["/usr/local/bin/tool.sh"]["mode"] == 0o600 and files["/named"]["data"].startswith(b"#!/bin/sh")
    assert files["/cache-count"]["data"] == b"1\n" and "/cache" not in files, "the cache mount is not in the layer"
    assert files["/from-bind"]["data"] == b"bound\n" and "/in" not in files
    assert files["/tmpfs-list"]["data"] == b"gone\n" and "/scratch" not in files
    assert files["/ifaces"]["data"] == b"1\n", "--network=none: only the loopback interface"
    assert files["/shell"]["data"] == b"shell: /bin/sh\n"
    c = cfg["config"]
    assert c["Shell"] == ["/bin/sh", "-e", "-c"] and c["StopSignal"] == "SIGQUIT"
    assert c["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 2}
    assert "OnBuild" not in c, "triggers ran and are not inherited"
    assert not [h for h in cfg["history"] if "ONBUILD" in h["created_by"]], "ONBUILD makes no history (BuildKit)"
    assert not list((rl.root / "tmp").glob("add-*")), "downloads are removed after the build"
    # the cache mount persists across builds (a new run sees the old content)
    build(rl, ctx, "-t", "more:2", "--no-cache")
    _, files2 = image_files(rl, "more:2", tmp_path)
    assert files2["/cache-count"]["data"] == b"2\n"
    # a wrong checksum is an error naming the URL
    (ctx / "Dockerfile").write_text(f"FROM {base}\nADD --checksum=sha256:{'0' * 64} {url}/tool.sh /x\n")
    cp = rl("build", str(ctx))
    assert cp.returncode != 0 and "checksum mismatch" in cp.stderr and f"{url}/tool.sh" in cp.stderr


def test_run_mount_stubs_are_removed_without_following_the_steps_links(rl, registry, tmp_path):
    """After a RUN, the mount points the runtime made (empty files and directories) are removed
    from the step's upper dir, outside the container: a step that moved them away and left a
    symlink to a host directory in their place must not get that directory's empty entries
    removed (nor the ones of a directory a stub's parent points to)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "hosts").write_text("")
    (victim / "sys").mkdir()
    (victim / "etc").mkdir()
    (victim / "etc" / "hostname").write_text("")
    ctx = write_context(tmp_path / "ctx", {
        "Dockerfile": f"FROM {registry.ref('busybox')}\n"
                      "RUN --mount=type=tmpfs,target=/newdir/sys --mount=type=bind,source=Dockerfile,"
                      f"target=/newdir/hosts mv /newdir /nd2 && ln -s {victim} /newdir\n"
                      f"RUN --mount=type=tmpfs,target=/w/etc/hostname mv /w /w2 && ln -s {victim} /w\n"})
    build(rl, ctx, "-t", "stubs")
    assert sorted(os.listdir(victim)) == ["etc", "hosts", "sys"]
    assert os.listdir(victim / "etc") == ["hostname"]
    _, files = image_files(rl, "stubs", tmp_path)
    assert files["/newdir"]["target"] == str(victim) and files["/w"]["target"] == str(victim)


def _cached(stderr: str, instruction: str) -> bool:
    """Whether the step of ``instruction`` (its STEP line) was a cache hit."""
    lines = stderr.splitlines()
    i = next(n for n, line in enumerate(lines) if "STEP" in line and line.endswith(instruction))
    return "--> Using cache" in lines[i + 1]


def test_build_network_modes_and_bare_pull(rl, registry, tmp_path):
    require("overlay")
    base = registry.ref("busybox")
    run = "RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /ifaces"
    ctx = write_context(tmp_path / "net", {"Dockerfile": f"FROM {base}\n{run}\n"})
    # a bare --pull means always and leaves CONTEXT alone (nargs="?" took it as the policy before)
    build(rl, ctx, "-t", "net:none", "--network", "none", "--pull")
    _, files = image_files(rl, "net:none", tmp_path)
    assert files["/ifaces"]["data"] == b"lo\n", "--network none: only the loopback interface"
    cp = build(rl, ctx, "-t", "net:host", "--pull", "--network", "host")
    assert not _cached(cp.stderr, run), "the network mode is part of the RUN's cache key"
    _, files = image_files(rl, "net:host", tmp_path)
    with open("/proc/net/dev") as f:
        host = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    assert files["/ifaces"]["data"].decode().split() == host, "--network host: the host's interfaces"
    assert _cached(build(rl, ctx, "--network", "host").stderr, run)


BIND_DOCKERFILE = """\
FROM {base} AS gen
COPY g.txt /g.txt
FROM {base}
RUN --mount=type=cache,target=/c sh -c 'echo run >> /c/log; wc -l < /c/log > /cache-count'
RUN --mount=type=bind,source=data,target=/in cat /in/d.txt > /out
RUN --mount=type=bind,from=gen,source=/g.txt,target=/g.txt cat /g.txt > /outg
"""


def test_run_bind_mount_content_is_in_the_cache_key(rl, registry, tmp_path):
    require("overlay")
    df = BIND_DOCKERFILE.format(base=registry.ref("busybox"))
    ctx = write_context(tmp_path / "bind", {"Dockerfile": df, "data/d.txt": "one\n", "g.txt": "g1\n"})
    run_cache, run_ctx, run_stage = df.splitlines()[3:6]
    build(rl, ctx, "-t", "bind:1")
    _, files = image_files(rl, "bind:1", tmp_path)
    assert (files["/out"]["data"], files["/outg"]["data"], files["/cache-count"]["data"]) == (b"one\n", b"g1\n",
                                                                                               b"1\n")
    again = build(rl, ctx, "-t", "bind:1")
    assert again.stderr.count("--> Using cache") == 4, "unchanged: every step from the cache"
    # a changed file under the bind-mounted context path: that RUN runs again
    (ctx / "data" / "d.txt").write_text("two\n")
    cp = build(rl, ctx, "-t", "bind:2")
    assert _cached(cp.stderr, run_cache), "the cache mount's content (changed by the last run) is not in the key"
    assert not _cached(cp.stderr, run_ctx)
    _, files = image_files(rl, "bind:2", tmp_path)
    assert files["/out"]["data"] == b"two\n" and files["/cache-count"]["data"] == b"1\n"
    # a changed stage mounted with from=: that RUN runs again
    (ctx / "g.txt").write_text("g2\n")
    cp = build(rl, ctx, "-t", "bind:3")
    assert _cached(cp.stderr, run_cache) and _cached(cp.stderr, run_ctx) and not _cached(cp.stderr, run_stage)
    _, files = image_files(rl, "bind:3", tmp_path)
    assert files["/out"]["data"] == b"two\n" and files["/outg"]["data"] == b"g2\n"
    # a source missing from the context: the file and line
    (ctx / "Dockerfile").write_text("FROM scratch\n\nRUN --mount=type=bind,source=nothere,target=/x true\n")
    cp = rl("build", str(ctx))
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "Dockerfile:3: RUN --mount=type=bind,source=nothere,target=/x true: RUN --mount=type=bind: " \
           "'nothere' is not in the build context" in cp.stderr


def test_copy_from_image_and_its_errors_name_the_line(rl, registry, tmp_path):
    require("overlay")
    base = registry.ref("busybox")
    ctx = write_context(tmp_path / "cf", {"Dockerfile": f"FROM scratch\nCOPY --from={base} /bin/busybox /bb\n"})
    build(rl, ctx, "-t", "cf:1")
    _, files = image_files(rl, "cf:1", tmp_path)
    assert files["/bb"]["type"] == "file" and files["/bb"]["mode"] & 0o111 and len(files) == 1
    (ctx / "Dockerfile").write_text("FROM scratch\n\nCOPY --from=localhost:1/nope /x /x\n")
    cp = rl("build", str(ctx))
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "/Dockerfile:3: COPY --from=localhost:1/nope /x /x: cannot connect to registry localhost:1" in cp.stderr
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN --mount=type=bind,from=localhost:1/nope,target=/n true\n")
    cp = rl("build", str(ctx))
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "/Dockerfile:2: RUN --mount=type=bind,from=localhost:1/nope,target=/n true: cannot connect to " \
           "registry localhost:1" in cp.stderr


# ---------------------------------------------------------------------------
# other platforms (emulation through archsupport), manifest lists

PLATFORM_DOCKERFILE = """\
ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS tools
RUN uname -m > /build-arch
FROM ${BASE}
ARG TARGETARCH
ARG TARGETPLATFORM
COPY --from=tools /build-arch /build-arch
RUN uname -m > /arch && echo "$TARGETARCH $TARGETPLATFORM" > /target
CMD ["cat", "/arch"]
"""


def test_platform_arm64_build_runs_emulated(rl, registry, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "arm", {"Dockerfile": PLATFORM_DOCKERFILE})
    build(rl, ctx, "--platform", "linux/arm64", "-t", "arm:1", "--build-arg", f"BASE={registry.ref('busybox')}")
    cfg, files = image_files(rl, "arm:1", tmp_path)
    assert cfg["architecture"] == "arm64"
    assert files["/arch"]["data"] == b"aarch64\n"
    assert files["/target"]["data"] == b"arm64 linux/arm64\n"
    host = os.uname().machine
    assert files["/build-arch"]["data"] == f"{host}\n".encode(), "FROM --platform=$BUILDPLATFORM runs natively"
    assert rl.ok("run", "--rm", "--platform", "linux/arm64", "arm:1") == "aarch64\n"


def test_two_platforms_push_pull_run(rl, registry, tmp_path):
    require("overlay")
    from tests.conftest import RL

    ctx = write_context(tmp_path / "multi", {"Dockerfile": PLATFORM_DOCKERFILE})
    ref = registry.ref("multi-built", "v1")
    iid = tmp_path / "iid"
    cp = build(rl, ctx, "--platform", "linux/amd64,linux/arm64", "-t", ref, "--iidfile", str(iid),
               "--build-arg", f"BASE={registry.ref('busybox')}")
    index_digest = cp.stdout.strip()
    assert iid.read_text() == index_digest, "--iidfile: the manifest list's digest"
    idx = json.loads(rl.ok("manifest", "inspect", ref))
    assert sorted(m["platform"]["architecture"] for m in idx["manifests"]) == ["amd64", "arm64"]
    rl.ok("push", ref)
    sk = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                        capture_output=True, text=True)
    assert sk.returncode == 0, sk.stderr
    remote = json.loads(sk.stdout)
    assert "sha256:" + hashlib.sha256(sk.stdout.encode()).hexdigest() == index_digest
    assert sorted(m["platform"]["architecture"] for m in remote["manifests"]) == ["amd64", "arm64"]
    # a fresh store pulls it back: each platform runs as itself
    other = RL(tmp_path / "other")
    try:
        other.ok("pull", ref)
        host = os.uname().machine
        assert other.ok("run", "--rm", ref) == f"{host}\n"
        other.ok("pull", "--platform", "linux/arm64", ref)
        assert other.ok("run", "--rm", "--platform", "linux/arm64", ref) == "aarch64\n"
        assert other.ok("run", "--rm", "--platform", "linux/arm64", ref, "cat", "/target") == "arm64 linux/arm64\n"
    finally:
        other.cleanup()


def test_failing_run_of_two_platforms_names_the_platform(rl, registry, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "pf", {"Dockerfile": f"FROM {registry.ref('busybox')}\n"
                                                        "RUN test \"$(uname -m)\" != aarch64\n"})
    cp = rl("build", "-q", "--platform", "linux/amd64,linux/arm64", "-t", "pf:1", str(ctx), timeout=600)
    assert cp.returncode == 1
    assert f"Error: [linux/arm64] {ctx}/Dockerfile:2: RUN test \"$(uname -m)\" != aarch64: process" in cp.stderr
    assert "exit code: 1" in cp.stderr and "[linux/amd64]" not in cp.stderr
    assert "Hint: the command printed nothing" in cp.stderr, "-q showed no output: not 'see it above'"
    assert rl("image", "inspect", "pf:1").returncode != 0


def test_output_oci_archive_of_two_platforms(rl, registry, tmp_path):
    require("overlay")
    ctx = write_context(tmp_path / "o2", {"Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY f /f\n", "f": "x"})
    out = tmp_path / "multi.tar"
    build(rl, ctx, "--platform", "linux/amd64,linux/arm64", "-t", "two:1", "--build-arg",
          f"BASE={registry.ref('busybox')}", "--output", f"type=oci-archive,dest={out}")
    layout = tmp_path / "layout"
    with tarfile.open(out) as tf:
        tf.extractall(layout)
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/two:1"
    for arch in ("amd64", "arm64"):
        sk = subprocess.run(["skopeo", "inspect", "--override-arch", arch, f"oci:{layout}"], capture_output=True,
                            text=True)
        assert sk.returncode == 0, sk.stderr
        assert json.loads(sk.stdout)["Architecture"] == arch
    cp = rl("build", "--platform", "linux/amd64,linux/arm64", "--build-arg", f"BASE={registry.ref('busybox')}",
            "--output", f"type=docker-archive,dest={tmp_path / 'x.tar'}", str(ctx))
    assert cp.returncode == 125 and "use --output type=oci-archive" in cp.stderr
