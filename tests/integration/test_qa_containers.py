"""QA of the containers issue: Docker behaviours and hostile images the other tests
did not pin down (each test here failed before its fix, or covers a criterion no
other test checked).

Hostile images are built here (tests.imgtools) on top of the busybox test image's
layers and pushed to a private docker-registry.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import Registry
from tests.imgtools import Layout, Tar

pytestmark = pytest.mark.usefixtures("unprivileged")

PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def _busybox_layers(images) -> list[bytes]:
    lay = images.layout("busybox")
    digest = images.info("busybox")["manifests"][f"linux/{images.host_arch}"]
    man = json.loads((lay / "blobs" / "sha256" / digest[7:]).read_bytes())
    return [gzip.decompress((lay / "blobs" / "sha256" / x["digest"][7:]).read_bytes()) for x in man["layers"]]


@pytest.fixture(scope="module")
def victim(tmp_path_factory) -> Path:
    """A host directory hostile images point their links at: nothing may appear in it."""
    d = tmp_path_factory.mktemp("victim")
    (d / "passwd").write_text("hostuser:x:1234:1234::/hosthome:/bin/sh\n")
    return d


@pytest.fixture(scope="module")
def qa_images(images, victim, tmp_path_factory):
    """{tag: reference} of images with hostile or unusual configs and links."""
    base = _busybox_layers(images)
    lay = Layout(tmp_path_factory.mktemp("qa-layout"))
    v = str(victim)
    rel_up = "../" * 12
    big = b"".join(b"user%d:x:%d:%d::/home/u%d:/bin/sh\n" % (i, i, i, i) for i in range(60000))
    defs = {
        # /etc files that are links the image does not resolve (Ubuntu's resolv.conf -> ../run/systemd/...)
        "etc-links": (Tar().dir("etc").dir("run")
                      .symlink("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
                      .symlink("etc/hosts", v + "/hosts-abs")
                      .symlink("etc/hostname", rel_up + v[1:] + "/hostname-rel"), {}),
        # links that point outside the root: everything must land inside it
        "wd-link": (Tar().symlink("wd", v).symlink("data", rel_up + v[1:]),
                    {"WorkingDir": "/wd/made-by-workdir", "Volumes": {"/data/made-by-volume": {}}}),
        "wd-dotdot": (None, {"WorkingDir": "/../../../.." + v + "/made-by-dotdot"}),
        # a passwd larger than any fixed read buffer, the user at its end
        "passwd-huge": (Tar().dir("etc").file("etc/passwd", big + b"target:x:4242:4343::/t:/bin/sh\n"),
                        {"User": "target"}),
        "passwd-link": (Tar().dir("etc").symlink("etc/passwd", v + "/passwd"), {"User": "hostuser"}),
        "passwd-mem": (Tar().dir("etc").symlink("etc/passwd", "/proc/self/mem"), {}),
        "env-weird": (None, {"Env": [PATH_ENV, "=nameless", "NOVALUE", "A=1=2"]}),
    }
    reg = Registry(tmp_path_factory.mktemp("qa-registry"))
    try:
        for tag, (extra, cfg) in defs.items():
            layers = base + ([extra.bytes()] if extra is not None else [])
            lay.image(tag, layers, config={"Cmd": ["sh"], "Env": [PATH_ENV], **cfg})
            reg.push_layout(lay.path, tag, "qa")
        yield {tag: reg.ref("qa", tag) for tag in defs}
    finally:
        reg.stop()


def _nothing_in(victim: Path) -> None:
    assert sorted(os.listdir(victim)) == ["passwd"], os.listdir(victim)


# ---------------------------------------------------------------------------
# hostile and unusual images

def test_etc_files_through_dangling_links(rl, qa_images, victim):
    out = rl.ok("run", "--rm", "--network", "none", "--hostname", "hn1", qa_images["etc-links"], "sh", "-c",
                "cat /etc/hostname; grep -c localhost /etc/hosts; grep -c nameserver /etc/resolv.conf; "
                "readlink /etc/resolv.conf; ls /run/systemd/resolve")
    assert out.split() == ["hn1", "2", "1", "../run/systemd/resolve/stub-resolv.conf", "stub-resolv.conf"]
    _nothing_in(victim)


def test_workdir_and_volume_links_stay_in_the_container(rl, qa_images, victim):
    out = rl.ok("run", "--rm", "--network", "none", qa_images["wd-link"], "sh", "-c",
                f"pwd; ls -d {victim}/made-by-workdir {victim}/made-by-volume; grep -c ' {victim}/made-by-volume ' "
                f"/proc/mounts")
    assert out.split() == [f"{victim}/made-by-workdir", f"{victim}/made-by-volume",
                           f"{victim}/made-by-workdir", "1"]   # pwd: resolved
    out = rl.ok("run", "--rm", "--network", "none", qa_images["wd-dotdot"], "pwd")
    assert out == f"{victim}/made-by-dotdot\n"
    _nothing_in(victim)


def test_image_user_resolution_robust(rl, qa_images, victim):
    # the user is found at the end of a passwd of several MB
    assert rl.ok("run", "--rm", "--network", "none", qa_images["passwd-huge"], "sh", "-c",
                 "id -u; id -g; echo $HOME") .split() == ["4242", "4343", "/t"]
    # /etc/passwd links to the host's file: read inside the container (dangling there)
    cp = rl("run", "--rm", "--network", "none", qa_images["passwd-link"], "true")
    assert cp.returncode == 125 and "unable to find user hostuser" in cp.stderr
    # a passwd that cannot be read is no passwd, not a crash
    cp = rl("run", "--rm", "--network", "none", qa_images["passwd-mem"], "sh", "-c", "id -u; echo $HOME")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["0", "/"]
    _nothing_in(victim)


def test_image_env_execve_rejects_does_not_crash(rl, qa_images):
    cp = rl("run", "--rm", "--network", "none", qa_images["env-weird"], "sh", "-c", "echo A=$A")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "A=1=2\n" and "Traceback" not in cp.stderr and "internal error" not in cp.stderr


# ---------------------------------------------------------------------------
# Docker behaviours

def test_tmpfs_is_noexec_nosuid_nodev_by_default(rl, registry):
    ref = registry.ref("busybox")
    out = rl.ok("run", "--rm", "--network", "none", "--tmpfs", "/t", "--tmpfs", "/x:exec,size=8m",
                "--mount", "type=tmpfs,target=/m", ref, "sh", "-c",
                "for d in /t /x /m; do grep \" $d \" /proc/mounts | cut -d' ' -f4; done; "
                "cp /bin/busybox /t/true; /t/true; echo t=$?; cp /bin/busybox /x/true; /x/true; echo x=$?")
    t, x, m = (set(line.split(",")) for line in out.splitlines()[:3])
    assert {"noexec", "nosuid", "nodev"} <= t and {"noexec", "nosuid", "nodev"} <= m
    assert "noexec" not in x and {"nosuid", "nodev"} <= x and "size=8192k" in x
    assert "t=126" in out and "x=0" in out


def test_wait_on_an_rm_container_gets_its_exit_status(rl, registry):
    ref = registry.ref("busybox")
    cid = rl.ok("run", "-d", "--rm", "--network", "none", ref, "sh", "-c", "sleep 1; exit 7").strip()
    assert rl.ok("wait", cid) == "7\n"
    assert rl.ok("ps", "-aq") == ""


def test_rm_force_of_a_missing_container_is_not_an_error(rl, registry):
    rl.ok("create", "--name", "there", "--network", "none", registry.ref("busybox"), "true")
    cp = rl("rm", "-f", "not-there", "there")
    assert cp.returncode == 0 and cp.stdout == "there\n" and "not-there" in cp.stderr
    cp = rl("rm", "not-there")
    assert cp.returncode == 1 and "no such container" in cp.stderr


def test_inspect_mounts_like_docker(rl, registry, tmp_path):
    rl.ok("create", "--name", "m", "--network", "none", "-v", "named:/n", "-v", "/anon", "-v", f"{tmp_path}:/h:ro",
          registry.ref("busybox"), "true")
    mounts = {m["Destination"]: m for m in json.loads(rl.ok("inspect", "m"))[0]["Mounts"]}
    named, anon, bind = mounts["/n"], mounts["/anon"], mounts["/h"]
    assert named["Name"] == "named" and named["Driver"] == "local" and named["RW"]
    assert named["Source"] == str(rl.root / "volumes" / "named" / "_data")
    assert anon["Type"] == "volume" and len(anon["Name"]) == 64
    assert anon["Source"] == str(rl.root / "volumes" / anon["Name"] / "_data")
    assert Path(anon["Source"]).is_dir()
    assert bind == {"Type": "bind", "Name": "", "Source": str(tmp_path), "Destination": "/h", "Mode": "ro",
                    "RW": False, "Propagation": "rprivate"}
    # rm -v removes the anonymous volume, not the named one
    rl.ok("rm", "-v", "m")
    assert rl.ok("volume", "ls", "-q").split() == ["named"]


def test_run_flags_without_other_tests(rl, registry):
    ref = registry.ref("busybox")
    # --stop-timeout: stop waits that long for a TERM-ignoring PID 1, then kills
    rl.ok("run", "-d", "--name", "slow", "--network", "none", "--stop-timeout", "1", ref, "sleep", "60")
    assert json.loads(rl.ok("inspect", "slow"))[0]["Config"]["StopTimeout"] == 1
    t0 = time.monotonic()
    rl.ok("stop", "slow")
    assert 0.8 < time.monotonic() - t0 < 8
    assert rl.ok("wait", "slow") == "137\n"
    # -u uid:gid (not in the image's passwd: HOME is /), ps --filter name=
    out = rl.ok("run", "--name", "ids", "--network", "none", "-u", "1234:5678", ref, "sh", "-c",
                "id -u; id -g; echo $HOME")
    assert out.split() == ["1234", "5678", "/"]
    assert rl.ok("ps", "-a", "--filter", "name=ids", "--format", "{{.Names}}") == "ids\n"
    assert rl.ok("ps", "-a", "--filter", "name=^sl", "--format", "{{.Names}}") == "slow\n"
    # start -a -i: stdin reaches the container
    rl.ok("create", "--name", "cat", "-i", "--network", "none", ref, "sh", "-c", "read x; echo got $x; exit 4")
    cp = rl("start", "-a", "-i", "cat", input="hello\n")
    assert cp.returncode == 4 and cp.stdout == "got hello\n"
    rl.ok("rm", "slow", "ids", "cat")


def test_namespaces_are_new(rl, registry):
    out = rl.ok("run", "--rm", "--network", "none", registry.ref("busybox"), "sh", "-c",
                "for n in mnt pid uts ipc cgroup net user; do readlink /proc/self/ns/$n; done")
    inside = out.split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "pid", "uts", "ipc", "cgroup", "net", "user")]
    assert len(inside) == 7 and all(a != b for a, b in zip(inside, host)), (inside, host)


def test_run_rm_leaves_nothing_after_failures_and_a_killed_cli(rl, registry):
    ref = registry.ref("busybox")
    assert rl("run", "--rm", "--network", "none", ref, "no-such-command").returncode == 127
    assert rl("run", "--rm", "--network", "none", "-u", "nobody-here", ref, "true").returncode == 125
    assert rl("run", "--rm", "--network", "none", "-v", "/anon", "-w", "/etc/passwd", ref, "true").returncode == 125
    assert rl.ok("ps", "-aq") == ""
    assert os.listdir(rl.root / "containers") == []
    assert rl.ok("volume", "ls", "-q") == ""
    # the CLI of a foreground --rm run is SIGKILLed: the container goes on, then goes away
    p = rl.popen("run", "--rm", "--network", "none", "--hostname", "orphan", ref, "sh", "-c", "echo up; sleep 1",
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"up\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert "Up" in rl.ok("ps", "--format", "{{.Status}}")
    deadline = time.monotonic() + 20
    while rl.ok("ps", "-aq") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rl.ok("ps", "-aq") == ""
    assert str(rl.root) not in Path("/proc/self/mountinfo").read_text()


# ---------------------------------------------------------------------------
# cp: failures on either side end the copy (they used to hang) with the reason

@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_failures_end_with_the_reason(rl, registry, tmp_path, state):
    rl.ok("run", "-d", "--name", "c", "--network", "none", registry.ref("busybox"), "sh", "-c",
          "ln -s /no/such/target /dangling; sleep 60")
    time.sleep(0.3)
    if state == "stopped":
        rl.ok("stop", "-t", "0", "c")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_big").write_bytes(os.urandom(1 << 21))      # more than a pipe holds
    (src / "b_secret").write_text("x")
    os.chmod(src / "b_secret", 0)
    cp = rl("cp", str(src), "c:/tmp/", timeout=60)
    assert cp.returncode == 1 and "b_secret" in cp.stderr and "Permission denied" in cp.stderr, cp.stderr
    cp = rl("cp", "c:/bin", str(tmp_path / "no" / "such" / "dir"), timeout=60)   # /bin: more than a pipe holds
    assert cp.returncode == 1 and "does not exist" in cp.stderr, cp.stderr
    cp = rl("cp", "-L", "c:/dangling", str(tmp_path), timeout=60)
    assert cp.returncode == 1 and "/no/such/target" in cp.stderr and "Traceback" not in cp.stderr, cp.stderr
    # and a good copy still works both ways
    rl.ok("cp", "c:/bin", str(tmp_path / "bin"), timeout=60)
    assert (tmp_path / "bin" / "busybox").is_file()
    os.chmod(src / "b_secret", 0o600)
    rl.ok("cp", str(src), "c:/tmp/", timeout=60)
    rl.ok("rm", "-f", "c")


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_out_names_no_owner_from_the_containers_files(rl, registry, tmp_path, state):
    """The helper that writes the tar runs our Python with the container's files as "/":
    an owner name looked up there goes through glibc's NSS, which follows the container's
    /etc/nsswitch.conf and loads its libnss_*.so, code of the container's outside it
    (docker CVE-2019-14271). Names of the container's passwd/group showing up in the tar
    prove the lookup; none may (the ids are there, as in an image layer)."""
    rl.ok("run", "-d", "--name", "c", "--network", "none", registry.ref("busybox"), "sh", "-c",
          "echo 'zzcontainer:x:0:0::/root:/bin/sh' > /etc/passwd; echo 'zzgroup:x:0:' > /etc/group; "
          "mkdir /d; echo hi > /d/f; touch /ready; sleep 60")
    try:
        for _ in range(100):
            if rl("exec", "c", "test", "-e", "/ready").returncode == 0:
                break
            time.sleep(0.1)
        if state == "stopped":
            rl.ok("stop", "-t", "0", "c")
        cp = rl("cp", "c:/d", "-", input=b"")
        assert cp.returncode == 0, cp.stderr
        with tarfile.open(fileobj=io.BytesIO(cp.stdout), mode="r|") as tf:
            got = [(m.name, m.uid, m.uname, m.gname) for m in tf]
        assert got == [("d", 0, "", ""), ("d/f", 0, "", "")]
        rl.ok("cp", "c:/d", str(tmp_path / "out"))
        assert (tmp_path / "out" / "f").read_text() == "hi\n"
    finally:
        rl("rm", "-f", "c")


def test_image_labels_are_the_containers_labels(rl, registry):
    rl.ok("create", "--name", "lab", "--network", "none", "-l", "test.role=mine", "-l", "extra=1",
          registry.ref("layered"))
    labels = json.loads(rl.ok("inspect", "lab"))[0]["Config"]["Labels"]
    assert labels == {"org.opencontainers.image.title": "layered (test image)", "test.role": "mine", "extra": "1"}
    assert rl.ok("ps", "-a", "--filter", "label=org.opencontainers.image.title", "--format", "{{.Names}}") == "lab\n"
    rl.ok("rm", "-v", "lab")


def test_it_without_a_terminal_is_refused_like_docker(rl, registry):
    ref = registry.ref("busybox")
    cp = rl("run", "--rm", "-it", "--network", "none", ref, "cat", input="x\n", timeout=30)
    assert cp.returncode == 1 and "the input device is not a TTY" in cp.stderr
    assert rl.ok("ps", "-aq") == ""                      # refused before anything was created
    assert rl.ok("run", "--rm", "-t", "--network", "none", ref, "echo", "t-only", input="").strip() == "t-only"
    rl.ok("run", "-d", "--name", "e", "--network", "none", ref, "sleep", "60")
    cp = rl("exec", "-it", "e", "cat", input="x\n", timeout=30)
    assert cp.returncode == 1 and "not a TTY" in cp.stderr
    assert rl.ok("exec", "-i", "e", "cat", input="piped\n") == "piped\n"
    rl.ok("rm", "-f", "e")


def test_ps_before_and_since_filters(rl, registry):
    for n in ("first", "second", "third"):
        rl.ok("create", "--name", n, "--network", "none", registry.ref("busybox"), "true")
    names = lambda *f: rl.ok("ps", "-a", *f, "--format", "{{.Names}}").split()  # noqa: E731
    assert names("--filter", "before=second") == ["first"]
    assert names("--filter", "since=first") == ["third", "second"]
    assert names("--filter", "since=first", "--filter", "before=third") == ["second"]
    cp = rl("ps", "-a", "--filter", "since=nobody")
    assert cp.returncode == 1 and "no such container" in cp.stderr
    rl.ok("rm", "first", "second", "third")


def test_restart_keeps_an_rm_container(rl, registry):
    cid = rl.ok("run", "-d", "--rm", "--name", "rr", "--network", "none", "-v", "/anon", registry.ref("busybox"),
                "sleep", "60").strip()
    vols = rl.ok("volume", "ls", "-q").split()
    assert rl.ok("restart", "-t", "0", "rr") == "rr\n"
    assert rl.ok("ps", "-q", "--no-trunc") == cid + "\n"         # the same container, running again
    assert rl.ok("volume", "ls", "-q").split() == vols
    rl.ok("stop", "-t", "0", "rr")                                 # a plain stop still removes it
    deadline = time.monotonic() + 10
    while rl.ok("ps", "-aq") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rl.ok("ps", "-aq") == "" and rl.ok("volume", "ls", "-q") == ""


def test_prune_finishes_interrupted_removals_and_creates(rl, registry):
    """A CLI killed inside `rm` (after the rename, before the files are gone) or inside
    `create` leaves hidden directories holding subordinate-owned files: prune removes them."""
    ref = registry.ref("busybox")
    rl.ok("run", "--network", "none", ref, "sh", "-c", "mkdir /d && echo x > /d/f && chown -R 1000:1000 /d")
    cid = rl.ok("ps", "-aq", "--no-trunc").strip()
    croot = rl.root / "containers"
    dead = 2 ** 22 + 17        # above pid_max: no such process
    os.rename(croot / cid, croot / f".{cid}.removing{dead}")
    (croot / f".{'a' * 64}.tmp" / "upper").mkdir(parents=True)
    keep = croot / f".{'b' * 64}.removing{os.getpid()}"        # a live remover: left alone
    keep.mkdir()
    assert rl.ok("ps", "-aq") == ""
    out = rl.ok("container", "prune", "-f")
    assert cid in out and "a" * 64 in out
    assert sorted(os.listdir(croot)) == [keep.name]
    keep.rmdir()


def test_prune_without_force_asks_even_without_a_terminal(rl, registry):
    """Docker reads the answer from stdin, terminal or not: no "y", nothing removed."""
    rl.ok("create", "--name", "stopped", "--network", "none", "-v", "/anon", registry.ref("busybox"), "true")
    rl.ok("rm", "stopped")                                   # its anonymous volume stays (no -v)
    rl.ok("create", "--name", "stopped", "--network", "none", registry.ref("busybox"), "true")
    rl.ok("tag", registry.ref("busybox"), "extra:1")
    rl.ok("rmi", registry.ref("busybox"))                    # still tagged extra:1
    for cmd in (["container", "prune"], ["volume", "prune"], ["image", "prune", "-a"]):
        cp = rl(*cmd, input="")
        assert cp.returncode == 0 and "Are you sure" in cp.stdout, (cmd, cp.stdout)
        cp = rl(*cmd, input="no\n")
        assert cp.returncode == 0 and "Deleted" not in cp.stdout, (cmd, cp.stdout)
    assert rl.ok("ps", "-aq") != "" and rl.ok("volume", "ls", "-q") != ""
    assert "Deleted Containers:" in rl.ok("container", "prune", input="y\n")
    assert rl.ok("ps", "-aq") == ""
    assert rl.ok("volume", "ls", "-q") != ""
    rl.ok("volume", "prune", input="y\n")
    assert rl.ok("volume", "ls", "-q") == ""
    rl.ok("image", "prune", "-a", input="y\n")
    assert rl.ok("images", "-q") == ""


def test_parallel_runs_share_layers_and_concurrent_rm_ps(rl, registry):
    """8 `run --rm` at once into an empty store (they pull the image together), then
    8 `rm -f` racing 8 `ps -a`: all succeed, one copy of each layer, nothing left."""
    ref = registry.ref("layered")
    procs = [rl.popen("run", "--rm", "--network", "none", ref, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1] for o in outs]
    assert all(o[0] == b"hello from layered world\n" for o in outs)
    assert len(os.listdir(rl.root / "layers")) == 3
    assert os.listdir(rl.root / "containers") == [] and rl.ok("volume", "ls", "-q") == ""
    for i in range(8):
        rl.ok("run", "-d", "--name", f"p{i}", "--network", "none", "--entrypoint", "sleep", ref, "60")
    procs = [rl.popen("rm", "-f", "-v", f"p{i}", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(8)]
    procs += [rl.popen("ps", "-a", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, [o[1] for o in outs]
    assert all(b"Traceback" not in o[1] for o in outs)
    assert rl.ok("ps", "-aq") == "" and os.listdir(rl.root / "containers") == []
    assert rl.ok("volume", "ls", "-q") == ""


def test_ctrl_c_of_a_foreground_rm_run(rl, registry):
    p = rl.popen("run", "--rm", "--network", "none", "-v", "/anon", registry.ref("busybox"), "sh", "-c",
                 "trap 'echo interrupted; exit 130' INT; echo up; while true; do sleep 0.1; done",
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"up\n"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and out == b"interrupted\n", err
    assert rl.ok("ps", "-aq") == "" and os.listdir(rl.root / "containers") == []
    assert rl.ok("volume", "ls", "-q") == ""
