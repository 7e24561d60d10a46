"""Running real images pulled from the test registry (the image store + the runtime)."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture
def refs(registry, unprivileged):
    return {"busybox": registry.ref("busybox", "latest"), "layered": registry.ref("layered", "latest")}


def test_run_pulls_and_honours_the_image_config(rl, refs):
    cp = rl("run", "--rm", "--network", "none", refs["layered"])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "hello from layered world\n"      # Entrypoint + Cmd
    out = rl.ok("run", "--rm", "--network", "none", "--entrypoint", "sh", refs["layered"], "-c",
                "pwd; echo $GREETING; echo $PATH")
    assert out.splitlines() == ["/work/created", "hi there",
                                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    insp = json.loads(rl.ok("create", "--name", "l", refs["layered"]) and rl.ok("inspect", "l"))[0]
    assert insp["Config"]["StopSignal"] == "SIGUSR1"
    assert insp["Config"]["Volumes"] == {"/vol": {}}
    assert any(m["Destination"] == "/vol" and m["Type"] == "volume" for m in insp["Mounts"])
    img = json.loads(rl.ok("image", "inspect", refs["layered"]))[0]
    assert insp["Image"] == img["Id"]


def test_whiteouts_opaque_owners_and_layers_unchanged(rl, refs):
    script = ("ls /etc/removed-me 2>&1; ls /opq; stat -c '%u:%g %a' /data/owned /home/tester/owned-by-1000; "
              "stat -c %a /data/suid; stat -c %i /data/owned /data/hard | uniq | wc -l; readlink /data/link; "
              "id -u; echo x > /etc/group; rm /opq/c; touch /newfile")
    out = rl.ok("run", "--name", "lay", "--network", "none", "--entrypoint", "sh", refs["layered"], "-c", script)
    lines = out.splitlines()
    assert "No such file" in lines[0]
    assert lines[1] == "c"                       # opaque: a and b of the lower layer are hidden
    assert lines[2] == "1000:50 600" and lines[3] == "1000:1000 640"
    assert lines[4] == "4755" and lines[5] == "1" and lines[6] == "owned" and lines[7] == "0"
    cid = json.loads(rl.ok("inspect", "lay"))[0]["Id"]
    upper = rl.root / "containers" / cid / "upper"
    assert (upper / "newfile").exists() and (upper / "etc" / "group").read_text() == "x\n"
    # the image's layers are unchanged: a new container sees the original content
    out = rl.ok("run", "--rm", "--network", "none", "--entrypoint", "sh", refs["layered"], "-c",
                "ls /opq; cat /etc/group | head -1; ls /newfile 2>&1; true")
    assert out.splitlines()[0] == "c" and out.splitlines()[1] == "root:x:0:" and "No such file" in out
    rl.ok("rm", "-v", "lay")


def test_image_volume_gets_image_content_and_anonymous_volume_removed(rl, refs):
    out = rl.ok("run", "--rm", "--network", "none", "--entrypoint", "sh", "-v", "named:/data", refs["layered"],
                "-c", "ls /data; stat -c %u /data/owned")
    assert out.split() == ["hard", "link", "owned", "sgid-dir-file", "sticky", "suid", "1000"]   # copied up
    assert rl.ok("volume", "ls", "-q").split() == ["named"]    # the anonymous /vol went with --rm


def test_pull_never_unknown_image(rl, registry, unprivileged):
    cp = rl("run", "--rm", "--pull=never", registry.ref("busybox", "latest"), "true")
    assert cp.returncode == 125 and "image not known" in cp.stderr
    cp = rl("run", "--rm", "--pull", "never", "no-such-image-here", "true")
    assert cp.returncode == 125 and "image not known" in cp.stderr
    assert rl.ok("ps", "-aq") == ""


def test_pull_missing_pulls_only_what_is_missing(rl, registry, free_port_ref):
    ref = registry.ref("busybox", "latest")
    assert rl.ok("images", "-q") == ""
    # missing: pulled
    assert rl.ok("run", "--rm", "--pull=missing", "--network", "none", ref, "echo", "ran") == "ran\n"
    assert rl.ok("images", "-q") != ""
    # present: not pulled again. The same image under a name whose registry does not answer
    # (nothing listens there) runs with missing and never; always has to ask, and fails.
    rl.ok("tag", ref, free_port_ref)
    assert rl.ok("run", "--rm", "--pull=missing", "--network", "none", free_port_ref, "echo", "local") == "local\n"
    assert rl.ok("run", "--rm", "--pull=never", "--network", "none", free_port_ref, "true") == ""
    cp = rl("run", "--rm", "--pull=always", "--network", "none", free_port_ref, "true")
    assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
    # the default policy is missing
    assert rl.ok("run", "--rm", "--network", "none", free_port_ref, "echo", "default") == "default\n"
    assert rl.ok("ps", "-aq") == ""


@pytest.fixture
def free_port_ref() -> str:
    from tests.conftest import free_port

    return f"127.0.0.1:{free_port()}/nowhere/busybox:latest"


def test_ps_ancestor_and_inspect_fallback(rl, refs):
    rl.ok("create", "--name", "a1", refs["busybox"], "true")
    rl.ok("create", "--name", "b1", refs["layered"])
    assert rl.ok("ps", "-a", "--filter", f"ancestor={refs['layered']}", "--format", "{{.Names}}") == "b1\n"
    img = json.loads(rl.ok("inspect", refs["busybox"]))[0]    # not a container: the image
    assert img["Id"].startswith("sha256:")
    cp = rl("inspect", "neither-container-nor-image")
    assert cp.returncode == 1
    cp = rl("rmi", refs["layered"])
    assert cp.returncode != 0      # in use by b1
    rl.ok("rm", "a1", "b1")


def test_default_network_with_image(rl, refs):
    out = rl.ok("run", "--rm", refs["busybox"], "sh", "-c", "cat /etc/hostname; ip -o link | grep -c -v ': lo:'")
    host, ifs = out.split()
    assert len(host) == 12 and int(ifs) >= 1


def test_foreign_image_runs_under_sandboxed_emulation(rl, registry, images, unprivileged):
    foreign = "arm64" if images.host_arch == "amd64" else "amd64"
    uname = {"arm64": "aarch64", "amd64": "x86_64"}[foreign]
    host_entries = sorted(os.listdir("/proc/sys/fs/binfmt_misc")) if os.path.isdir("/proc/sys/fs/binfmt_misc") \
        else []
    cp = rl("run", "--rm", "--network", "none", registry.ref("busybox", foreign), "uname", "-m")
    try:
        import archsupport.emulation  # noqa: F401
    except ImportError:
        # the emulation chooser has not landed: a clear refusal, not a crash or "exec format error"
        assert cp.returncode == 125 and "emulation" in cp.stderr and "Traceback" not in cp.stderr
        return
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == f"{uname}\n"
    # the registration lived in the container's own binfmt_misc instance
    after = sorted(os.listdir("/proc/sys/fs/binfmt_misc")) if os.path.isdir("/proc/sys/fs/binfmt_misc") else []
    assert after == host_entries


def test_image_stop_signal_and_pull_always(rl, refs):
    # the layered image's StopSignal is SIGUSR1
    rl.ok("run", "-d", "--name", "st", "--network", "none", "--entrypoint", "sh", refs["layered"], "-c",
          "trap 'exit 6' USR1; while true; do sleep 0.1; done")
    rl.ok("stop", "st")
    assert rl.ok("wait", "st") == "6\n"
    rl.ok("rm", "-v", "st")
    cp = rl("run", "--rm", "--pull=always", "--network", "none", refs["busybox"], "true")
    assert cp.returncode == 0, cp.stderr
