"""Pure parts of the runtime: option parsing, spec building, the set-up plan."""

from __future__ import annotations

import os

import pytest

from rootless.errors import ContainerError, RootlessError, UsageError
from rootless.runtime import plan as P
from rootless.runtime.spec import (DEFAULT_CAPS, ContainerSpec, MountSpec, RunOptions, build_spec, effective_caps,
                                   merge_env, parse_bytes, parse_env, parse_env_file_text, parse_mount,
                                   parse_signal, parse_tmpfs, parse_volume, resolve_user)
from rootless.storage import fuse_overlayfs_argv, keep_id_fuse_mapping, overlay_options

IMG = {"Env": ["PATH=/bin", "GREETING=hi"], "Entrypoint": ["/usr/bin/hello"], "Cmd": ["world"],
       "WorkingDir": "/work", "User": "", "StopSignal": "SIGUSR1", "Volumes": {"/vol": {}}}


def spec(**kw):
    return build_spec(IMG, RunOptions(**kw), image_id="sha256:abc", image_ref="img", default_hostname="h1")


# ---------------------------------------------------------------------------
# parsing

def test_parse_volume():
    assert parse_volume("/h:/c") == MountSpec("bind", "/c", "/h", False)
    assert parse_volume("/h:/c:ro") == MountSpec("bind", "/c", "/h", True)
    assert parse_volume("name:/c:rw,z") == MountSpec("volume", "/c", "name", False)
    assert parse_volume("/anon") == MountSpec("volume", "/anon")
    assert parse_volume("/h:/c//x/./") .target == "/c/x"
    for bad in ("", "rel:/c:x", "./rel:/c", "a/b:/c", "/h:c", "/h:/c:bogus", "/h:/", "/h:/a/../b", "a:b:c:d",
                "bad name:/c"):
        with pytest.raises(UsageError):
            parse_volume(bad)


def test_parse_mount_and_tmpfs():
    assert parse_mount("type=bind,source=/h,target=/c,readonly") == MountSpec("bind", "/c", "/h", True)
    assert parse_mount("type=volume,src=v,dst=/c") == MountSpec("volume", "/c", "v", False)
    assert parse_mount("type=tmpfs,target=/t,tmpfs-size=1m") == MountSpec("tmpfs", "/t", "", False, ("size=1m",))
    for bad in ("type=bind,source=rel,target=/c", "type=nfs,target=/c", "type=bind,source=/h",
                "type=tmpfs,source=/x,target=/t", "type=bind,source=/h,target=/c,what=1"):
        with pytest.raises(UsageError):
            parse_mount(bad)
    assert parse_tmpfs("/t:size=64m,mode=1777,noexec") == MountSpec("tmpfs", "/t", "", False,
                                                                    ("size=64m", "mode=1777", "noexec"))
    with pytest.raises(UsageError):
        parse_tmpfs("/t:evil=1")


def test_parse_env():
    assert parse_env(["A=1", "B=", "C", "D"], {"C": "fromhost"}) == ["A=1", "B=", "C=fromhost"]
    for bad in ("=x", "A B=1", ""):
        with pytest.raises(UsageError):
            parse_env([bad], {})
    assert parse_env_file_text("# c\n\nX=1\nY=a b\n", "f", {}) == ["X=1", "Y=a b"]
    with pytest.raises(UsageError):
        parse_env_file_text("BAD KEY=1\n", "f", {})
    assert merge_env(["A=1", "B=2"], ["A=3"]) == ("A=3", "B=2")


def test_signals_caps_bytes():
    assert parse_signal("SIGTERM") == 15 and parse_signal("kill") == 9 and parse_signal("10") == 10
    assert parse_signal("SIGRTMIN+2") == 36
    # Docker's real-time names, with or without SIG
    assert parse_signal("RTMIN") == 34 and parse_signal("SIGRTMIN") == 34 and parse_signal("rtmin+15") == 49
    assert parse_signal("RTMAX") == 64 and parse_signal("SIGRTMAX-1") == 63 and parse_signal("RTMAX-14") == 50
    for bad in ("SIGNOPE", "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMAX+1", "RTMIN+", "0", "65"):
        with pytest.raises(UsageError):
            parse_signal(bad)
    assert set(effective_caps((), ())) == set(DEFAULT_CAPS)
    caps = effective_caps(("net_admin",), ("CAP_CHOWN",))
    assert "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps
    assert effective_caps((), ("ALL",)) == ()
    assert effective_caps(("SYS_ADMIN",), ("ALL",)) == ("CAP_SYS_ADMIN",)
    assert len(effective_caps(("ALL",), ())) == 41
    with pytest.raises(UsageError):
        effective_caps(("NOPE",), ())
    assert parse_bytes("64m", "x") == 64 << 20 and parse_bytes("1g", "x") == 1 << 30
    with pytest.raises(UsageError):
        parse_bytes("lots", "x")


# ---------------------------------------------------------------------------
# spec from image config + options

def test_build_spec_image_defaults():
    s = spec()
    assert s.argv == ("/usr/bin/hello", "world")
    assert s.env[:2] == ("PATH=/bin", "GREETING=hi") and "HOSTNAME=h1" in s.env
    assert s.working_dir == "/work" and s.stop_signal == 10 and s.hostname == "h1"
    assert s.mounts == (MountSpec("volume", "/vol"),)        # anonymous volume from the image
    assert s.caps == effective_caps((), ())


def test_build_spec_overrides():
    s = spec(command=("a", "b"), env=("GREETING=yo", "NEW=1"), workdir="/w", user="1000:50", tty=True,
             stop_signal="SIGINT", mounts=(MountSpec("bind", "/vol", "/host"),))
    assert s.argv == ("/usr/bin/hello", "a", "b")
    assert "GREETING=yo" in s.env and "NEW=1" in s.env and "TERM=xterm" in s.env
    assert s.working_dir == "/w" and s.user == "1000:50" and s.stop_signal == 2
    assert s.mounts == (MountSpec("bind", "/vol", "/host"),)   # covers the image volume
    s = spec(entrypoint="", command=("ls",))
    assert s.argv == ("ls",)
    s = spec(entrypoint="sh -c")
    assert s.argv == ("sh", "-c")     # --entrypoint resets the image's Cmd
    with pytest.raises(RootlessError):
        build_spec({}, RunOptions(), image_id="", image_ref="x")
    with pytest.raises(UsageError):
        spec(mounts=(MountSpec("tmpfs", "/t"), MountSpec("tmpfs", "/t")))
    with pytest.raises(UsageError):
        spec(hostname="bad host")
    # the image's labels are the container's too; --label wins
    s = build_spec(dict(IMG, Labels={"a": "img", "b": "img"}), RunOptions(labels=(("b", "cli"), ("c", ""))),
                   image_id="sha256:abc", image_ref="img")
    assert dict(s.labels) == {"a": "img", "b": "cli", "c": ""}


def test_spec_json_roundtrip():
    s = spec(labels=(("a", "b"),), mounts=(MountSpec("tmpfs", "/t", "", True, ("size=1m",)),))
    import json

    again = ContainerSpec.from_json(json.loads(json.dumps(s.to_json())))
    assert again == s


def test_resolve_user():
    passwd = "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000::/home/tester:/bin/sh\n"
    group = "root:x:0:\ntester:x:1000:\nstaff:x:50:tester\n"
    assert resolve_user("", passwd, group).uid == 0
    u = resolve_user("tester", passwd, group)
    assert (u.uid, u.gid, u.groups, u.home) == (1000, 1000, (50,), "/home/tester")
    u = resolve_user("1000:staff", passwd, group)
    assert (u.uid, u.gid) == (1000, 50)
    u = resolve_user("4242", passwd, group)
    assert (u.uid, u.gid, u.home) == (4242, 0, "/")
    with pytest.raises(ContainerError, match="unable to find user nobody"):
        resolve_user("nobody", passwd, group)
    with pytest.raises(ContainerError, match="unable to find group"):
        resolve_user("tester:wheel", passwd, group)
    assert resolve_user("0", None, None).uid == 0     # no passwd file


# ---------------------------------------------------------------------------
# the plan

def host(**kw):
    d = dict(container_dir="/s/containers/c1", store_dir="/s", lowers=("/s/layers/a/diff", "/s/layers/b/diff"),
             volume_dirs=(("/vol", "/s/volumes/x/_data", False),))
    d.update(kw)
    return P.Host(**d)


def kinds(steps):
    return [type(s).__name__ for s in steps]


def test_plan_order():
    steps = P.plan(spec(), host())
    k = kinds(steps)
    assert k[0] == "MountRootfs" and k[-1] == "Process"
    assert k.index("PivotRoot") > max(i for i, x in enumerate(k) if x in ("Mount", "Bind", "Mask", "ReadOnly"))
    order = [next(i for i, s in enumerate(steps) if getattr(s, "target", None) == t) for t in
             ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys")]
    assert order == sorted(order)
    assert k.index("Hostname") > k.index("PivotRoot")
    masked = [s.path for s in steps if isinstance(s, P.Mask)]
    assert masked == list(P.MASKED_PATHS)
    assert [s.path for s in steps if isinstance(s, P.ReadOnly)] == list(P.READONLY_PATHS)
    assert all(s.target.startswith("/etc/") for s in steps if isinstance(s, P.Bind) and "userdata" in s.source)
    root = steps[0]
    assert root.lowers == host().lowers and root.upper.endswith("c1/upper") and root.driver == "overlay"
    proc = steps[-1]
    assert proc.argv == ("/usr/bin/hello", "world") and proc.cwd == "/work" and not proc.no_new_privs
    assert any(isinstance(s, P.Mkdir) and s.path == "/work" for s in steps)
    assert "LoopbackUp" in k


def test_plan_variants():
    k = kinds(P.plan(spec(network="host"), host(new_netns=False)))
    assert "LoopbackUp" not in k and "Hostname" not in k
    sysbind = [s for s in P.plan(spec(network="host"), host(new_netns=False)) if getattr(s, "target", "") == "/sys"]
    assert isinstance(sysbind[0], P.Bind) and sysbind[0].readonly
    assert "RootReadonly" in kinds(P.plan(spec(read_only=True), host()))
    steps = P.plan(spec(), host(foreign_platform="linux/arm64"))
    assert kinds(steps)[1] == "Binfmt"
    steps = P.plan(spec(userns="keep-id", user="1001:1001"), host(fuse="/usr/bin/fuse-overlayfs",
                                                                    keep_id=(1001, 1001, 65537)))
    assert steps[0].driver == "fuse-overlayfs" and steps[0].uidmapping.startswith("1001:0:1")
    pts = next(s for s in P.plan(spec(), host(single_mapping=True)) if getattr(s, "target", "") == "/dev/pts")
    assert "gid=5" not in pts.data
    vols = P.plan(spec(mounts=(MountSpec("volume", "/data", "v"), MountSpec("tmpfs", "/t", "", True, ("noexec",)))),
                  host(volume_dirs=(("/data", "/s/volumes/v/_data", True), ("/vol", "/s/volumes/x/_data", False))))
    b = next(s for s in vols if isinstance(s, P.Bind) and s.target == "/data")
    assert b.source == "/s/volumes/v/_data" and b.copy_up
    t = next(s for s in vols if isinstance(s, P.Mount) and s.target == "/t")
    from rootless import syscalls as sc

    assert t.flags & sc.MS_RDONLY and t.flags & sc.MS_NOEXEC and t.data == ""
    # tmpfs: Docker's defaults noexec,nosuid,nodev; exec/suid/dev turn them off
    tm = P.plan(spec(mounts=(MountSpec("tmpfs", "/a"), MountSpec("tmpfs", "/b", "", False, ("exec", "size=1m")))),
                host())
    a = next(s for s in tm if isinstance(s, P.Mount) and s.target == "/a")
    b = next(s for s in tm if isinstance(s, P.Mount) and s.target == "/b")
    assert a.flags & (sc.MS_NOEXEC | sc.MS_NOSUID | sc.MS_NODEV) == sc.MS_NOEXEC | sc.MS_NOSUID | sc.MS_NODEV
    assert not b.flags & sc.MS_NOEXEC and b.flags & sc.MS_NOSUID and b.data == "size=1m"


def test_plan_keep_id_passwd_entry():
    kid = dict(fuse="/usr/bin/fuse-overlayfs", keep_id=(1001, 1001, 65537),
               keep_user=(1001, 1001, "alice", "/home/alice"))
    steps = P.plan(spec(userns="keep-id", user="1001:1001"), host(**kid))
    pw = [s for s in steps if isinstance(s, P.PasswdEntry)]
    assert len(pw) == 1 and pw[0].line == "alice:*:1001:1001:alice:/home/alice:/bin/sh"
    assert pw[0].file == "/s/containers/c1/userdata/passwd" and pw[0].uid == 1001
    k = kinds(steps)
    etc = max(i for i, s in enumerate(steps) if isinstance(s, P.Bind) and "userdata" in s.source)
    assert k.index("PasswdEntry") > etc
    assert k.index("PasswdEntry") < k.index("PivotRoot")
    # not without keep-id, nor over a file the user mounts, nor with a name that breaks the format
    assert "PasswdEntry" not in kinds(P.plan(spec(), host(keep_user=(1001, 1001, "alice", "/home/alice"))))
    mine = spec(userns="keep-id", mounts=(MountSpec("bind", "/etc/passwd", "/h/passwd"),))
    assert "PasswdEntry" not in kinds(P.plan(mine, host(**kid)))
    assert "PasswdEntry" not in kinds(P.plan(spec(userns="keep-id"), host(**dict(kid, keep_user=(
        1001, 1001, "a:b", "/home/a")))))
    assert P.passwd_line("bob", 5, 6, "") == "bob:*:5:6:bob:/:/bin/sh"


def test_passwd_has():
    text = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken\n"
    assert P.passwd_has(text, 0, "zed") and P.passwd_has(text, 1000, "zed") and P.passwd_has(text, 7, "alice")
    assert not P.passwd_has(text, 1001, "bob") and not P.passwd_has("", 0, "root")


def test_storage_options():
    assert overlay_options(["l1", "l2"], "u", "w") == "lowerdir=l2:l1,upperdir=u,workdir=w,userxattr"
    with pytest.raises(RootlessError):
        overlay_options(["a,b"], "u", "w")
    with pytest.raises(RootlessError):
        overlay_options([], "u", "w")
    argv = fuse_overlayfs_argv("/f", ["l1", "l2"], "u", "w", "/m", "0:1:1", "0:1:1")
    assert argv == ["/f", "-o", "lowerdir=l2:l1,upperdir=u,workdir=w,uidmapping=0:1:1,gidmapping=0:1:1", "/m"]
    # store id 0 (the user) is 1001 underneath; store ids 1..1001 are 0..1000; the rest stay
    assert keep_id_fuse_mapping(1001, 65537) == "1001:0:1:0:1:1001:1002:1002:64535"


def test_secure_join(tmp_path):
    from rootless.runtime.execute import secure_join

    root = str(tmp_path)
    os.makedirs(tmp_path / "etc")
    os.symlink("/etc", tmp_path / "abs")          # absolute: inside the root
    os.symlink("../../../../etc", tmp_path / "up")  # climbing: clamped at the root
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    assert secure_join(root, "/etc/hosts") == f"{root}/etc/hosts"
    assert secure_join(root, "/abs/hosts") == f"{root}/etc/hosts"
    assert secure_join(root, "/up/hosts") == f"{root}/etc/hosts"
    assert secure_join(root, "/../../x") == f"{root}/x"
    assert secure_join(root, "/new/deeper/file") == f"{root}/new/deeper/file"
    with pytest.raises(RootlessError):
        secure_join(root, "/loop1/x")


def test_detach_filter():
    from rootless.runtime.tty import DetachFilter, parse_detach_keys

    f = DetachFilter()
    assert f.feed(b"abc") == (b"abc", False)
    assert f.feed(b"x\x10") == (b"x", False)       # held: maybe the start of ctrl-p ctrl-q
    assert f.feed(b"y") == (b"\x10y", False)       # not: passed on
    assert f.feed(b"\x10\x11rest") == (b"", True)
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(UsageError):
        parse_detach_keys("meta-q")


def test_network_plan_files():
    from rootless.network import NetworkPlan

    p = NetworkPlan("pasta", host_resolv="nameserver 127.0.0.53\nsearch lan\n", hosts=(("db", "10.0.0.5"),))
    files = p.etc_files("box")
    assert "nameserver 169.254.1.1" in files["/etc/resolv.conf"] and "search lan" in files["/etc/resolv.conf"]
    assert "127.0.1.1\tbox" in files["/etc/hosts"] and "10.0.0.5\tdb" in files["/etc/hosts"]
    assert files["/etc/hostname"] == "box\n"
    p = NetworkPlan("slirp4netns", host_resolv="nameserver 1.1.1.1\n")
    assert p.etc_files("b")["/etc/resolv.conf"].startswith("nameserver 10.0.2.3")
    p = NetworkPlan("none", dns=("9.9.9.9",))
    assert p.etc_files("b")["/etc/resolv.conf"] == "nameserver 9.9.9.9\n"
    assert not NetworkPlan("host").new_netns and NetworkPlan("none").new_netns


def test_human_duration():
    from rootless.cli.containers import human_duration

    assert human_duration(0.5) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(59) == "59 seconds"
    assert human_duration(61) == "About a minute"
    assert human_duration(3600) == "About an hour"
    assert human_duration(5 * 3600) == "5 hours"
    assert human_duration(3 * 86400) == "3 days"
