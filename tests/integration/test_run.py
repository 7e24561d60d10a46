"""`rootless run` and the container lifecycle, as the unprivileged user.

The engine tests run a busybox root filesystem (extracted from the test
image's OCI layout inside a user namespace) with --rootfs; test_images_run.py
runs real images pulled from the test registry.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.integration.rtutil import busybox_rootfs

DOCKER_DEFAULT_CAPS = 0x00000000a80425fb


@pytest.fixture(scope="session")
def bbroot(images, tmp_path_factory, unprivileged) -> str:
    from rootless.storage import remove_tree

    d = tmp_path_factory.mktemp("bbroot") / "rootfs"
    yield str(busybox_rootfs(images, d))
    remove_tree(d)      # files of subordinate ids: pytest could not remove them


def run(rl, bbroot, *args, **kw):
    """rootless run --rm --network none --rootfs BBROOT ARGS..."""
    opts = []
    args = list(args)
    while args and args[0].startswith("-"):
        opts.append(args.pop(0))
        if opts[-1] in ("-e", "-v", "-w", "-u", "--name", "--entrypoint", "--tmpfs", "--mount", "--cap-add",
                        "--cap-drop", "--security-opt", "--userns", "--network", "--hostname", "--env-file",
                        "-l", "--label", "--memory", "--cpus", "--pids-limit", "--stop-signal"):
            opts.append(args.pop(0))
    net = [] if any(o.startswith("--network") for o in opts) else ["--network", "none"]
    return rl("run", *net, *opts, "--rootfs", bbroot, *args, **kw)


def leaked_pastas(store: Path) -> list[int]:
    """pasta processes started for containers of ``store`` whose container is gone."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            if os.stat(f"/proc/{d}").st_uid != os.getuid():
                continue
        except OSError:
            continue
        if argv and argv[0].endswith(b"pasta") and str(store).encode() in b" ".join(argv) and argv[-2].isdigit():
            if not os.path.exists(f"/proc/{int(argv[-2])}"):
                out.append(int(d))
    return out


def procs_with_hostname(name: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"HOSTNAME={name}".encode() in env:
            out.append(int(d))
    return out


# ---------------------------------------------------------------------------
# exit statuses

@pytest.mark.parametrize("cmd,code", [
    (["true"], 0),
    (["false"], 1),
    (["sh", "-c", "exit 32"], 32),
    (["/etc/passwd"], 126),
    (["no-such-command"], 127),
    (["/no/such/path"], 127),
])
def test_exit_status(rl, bbroot, cmd, code):
    cp = run(rl, bbroot, "--rm", *cmd)
    assert cp.returncode == code, cp.stderr
    if code == 127:
        assert "not found" in cp.stderr or "no such file" in cp.stderr
    if code == 126:
        assert "permission denied" in cp.stderr
    assert "Traceback" not in cp.stderr


def test_killed_by_signal_is_128_plus_n(rl, bbroot):
    # with --init the shell is not PID 1, so SIGKILL to itself works
    cp = run(rl, bbroot, "--rm", "--init", "sh", "-c", "kill -9 $$")
    assert cp.returncode == 137, cp.stderr
    cp = run(rl, bbroot, "--rm", "--init", "sh", "-c", "kill -TERM $$")
    assert cp.returncode == 143, cp.stderr


def test_docker_kill_gives_137(rl, bbroot):
    cid = run(rl, bbroot, "-d", "sleep", "60", check=True).stdout.strip()
    assert rl.ok("kill", cid).strip() == cid
    assert rl.ok("wait", cid).strip() == "137"
    assert "Exited (137)" in rl.ok("ps", "-a")


# ---------------------------------------------------------------------------
# user namespace, ownership, writes

def test_root_inside_and_image_owners_kept(rl, bbroot):
    out = run(rl, bbroot, "--rm", "sh", "-c", "id -u; stat -c %u:%g /home/tester/owned-by-1000; "
                                              "cat /proc/self/uid_map", check=True).stdout.split("\n")
    assert out[0] == "0"
    assert out[1] == "1000:1000"
    uid_map = [line.split() for line in out[2:] if line.strip()]
    assert ["0", str(os.getuid()), "1"] in uid_map
    assert sum(int(x[2]) for x in uid_map) == 65537   # the whole subordinate range


def test_writes_go_to_upper_dir_and_lower_unchanged(rl, bbroot):
    before = {p: os.lstat(os.path.join(bbroot, p)).st_mtime_ns for p in ("etc/passwd", "bin", "etc")}
    run(rl, bbroot, "--name", "w", "sh", "-c", "echo new > /newfile; rm /etc/passwd; echo x >> /etc/group",
        check=True)
    cid = json.loads(rl.ok("inspect", "w"))[0]["Id"]
    upper = rl.root / "containers" / cid / "upper"
    assert (upper / "newfile").read_text() == "new\n"
    wh = os.lstat(upper / "etc" / "passwd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0   # overlay whiteout
    assert (upper / "etc" / "group").read_text().endswith("x\n")
    assert Path(bbroot, "etc/passwd").is_file()
    assert not Path(bbroot, "newfile").exists()
    assert not Path(bbroot, "etc/group").read_text().endswith("x\n")
    assert {p: os.lstat(os.path.join(bbroot, p)).st_mtime_ns for p in before} == before
    # the second start sees its own earlier writes
    assert rl.ok("start", "-a", "w") == ""
    rl.ok("rm", "w")
    assert not (rl.root / "containers" / cid).exists()


def test_bind_mount_files_belong_to_the_user(rl, bbroot, tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    (d / "in").write_text("from host\n")
    out = run(rl, bbroot, "--rm", "-v", f"{d}:/data", "sh", "-c", "cat /data/in; echo out > /data/out; "
                                                                "mkdir /data/dir", check=True).stdout
    assert out == "from host\n"
    assert (d / "out").read_text() == "out\n"
    assert os.stat(d / "out").st_uid == os.getuid()
    assert os.stat(d / "dir").st_uid == os.getuid()
    cp = run(rl, bbroot, "--rm", "-v", f"{d}:/data:ro", "sh", "-c", "echo x > /data/out")
    assert cp.returncode != 0 and "Read-only" in cp.stderr


def test_keep_id(rl, bbroot, tmp_path):
    d = tmp_path / "kid"
    d.mkdir()
    out = run(rl, bbroot, "--rm", "--userns", "keep-id", "-v", f"{d}:/data", "sh", "-c",
              "id -u; id -g; stat -c %u /home/tester/owned-by-1000; stat -c %u /bin/busybox; touch /data/f",
              check=True).stdout.split()
    assert out[0] == str(os.getuid()) and out[1] == str(os.getgid())
    assert out[2] == "1000" and out[3] == "0"   # the layers are presented with their own ids
    assert os.stat(d / "f").st_uid == os.getuid()


@pytest.mark.parametrize("network", ["default", "slirp4netns"])
def test_keep_id_with_a_network(rl, bbroot, tmp_path, network):
    """keep-id makes the container's root a subordinate id: the switch to it must not make the
    container's first process non-dumpable, or pasta and slirp4netns cannot open its namespaces.
    The user gets an /etc/passwd entry (Podman's: their name, ids and home) and HOME."""
    import pwd

    require("tun", "network")
    me = pwd.getpwuid(os.getuid())
    assert not any(f.split(":")[2:3] == [str(os.getuid())] for f in Path(bbroot, "etc/passwd").read_text().split())
    d = tmp_path / "kid"
    d.mkdir()
    cp = run(rl, bbroot, "--rm", "--userns", "keep-id", "--network", network, "-v", f"{d}:/data", "sh", "-c",
             "id -un; echo $HOME; ip -o addr | grep -v ' lo ' | grep -c inet; touch /data/f; "
             "grep -c '^root:' /etc/passwd")
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.split()
    assert out[0] == me.pw_name and out[1] == me.pw_dir
    assert int(out[2]) >= 1       # an interface besides lo
    assert out[3] == "1"          # the image's entries are kept
    assert os.stat(d / "f").st_uid == os.getuid()
    # not without keep-id
    assert me.pw_name not in run(rl, bbroot, "--rm", "cat", "/etc/passwd", check=True).stdout


# ---------------------------------------------------------------------------
# namespaces, /proc, /dev, /sys, capabilities, fds

def test_namespaces_and_filesystems(rl, bbroot):
    out = run(rl, bbroot, "--rm", "--hostname", "box1", "sh", "-c",
              "echo pid=$$; hostname; cat /etc/hostname; ls /dev | tr '\\n' ' '; echo; "
              "grep -c . /proc/keys || true; touch /sys/x 2>&1 || true; "
              "(echo 1 > /proc/sys/kernel/hostname) 2>&1 || true; ls /proc/acpi | wc -l; "
              "grep -E ' /dev/pts | /dev/shm | /dev/mqueue | /sys ' /proc/mounts | cut -d' ' -f2,3",
              check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "pid=1"
    assert lines[1] == "box1" and lines[2] == "box1"
    devs = set(lines[3].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd", "stdin",
            "stdout", "stderr", "ptmx"} <= devs
    assert "console" not in devs
    assert lines[4] == "0"    # masked: /dev/null
    assert "Read-only file system" in lines[5]
    assert "Read-only file system" in lines[6]
    assert lines[7] == "0"    # masked directory: empty
    assert "/dev/pts devpts" in out and "/dev/shm tmpfs" in out and "/dev/mqueue mqueue" in out
    assert "/sys sysfs" in out


def test_capabilities_default_add_drop_and_no_new_privs(rl, bbroot):
    def caps(*opts):
        out = run(rl, bbroot, "--rm", *opts, "sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
                  check=True).stdout
        d = dict(line.split(":") for line in out.splitlines())
        return int(d["CapEff"], 16), int(d["CapBnd"], 16), int(d["NoNewPrivs"])

    eff, bnd, nnp = caps()
    assert eff == DOCKER_DEFAULT_CAPS and bnd == DOCKER_DEFAULT_CAPS and nnp == 0
    eff, bnd, _ = caps("--cap-drop", "CHOWN", "--cap-add", "sys_admin")
    assert eff == (DOCKER_DEFAULT_CAPS & ~1) | (1 << 21)
    eff, bnd, nnp = caps("--cap-drop", "ALL", "--security-opt", "no-new-privileges")
    assert eff == 0 and bnd == 0 and nnp == 1
    # a non-root user has no effective capabilities
    out = run(rl, bbroot, "--rm", "-u", "1000", "grep", "CapEff", "/proc/self/status", check=True).stdout
    assert int(out.split()[1], 16) == 0


def _status(text: str) -> dict:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


@pytest.mark.parametrize("opts,cmd_eff,cmd_bnd,nnp", [
    ((), DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_CAPS, 0),
    (("--cap-drop", "ALL", "--security-opt", "no-new-privileges"), 0, 0, 1),
    (("--cap-add", "sys_admin", "-u", "1000"), 0, DOCKER_DEFAULT_CAPS | (1 << 21), 0),
])
def test_init_is_bounded_like_the_command(rl, bbroot, opts, cmd_eff, cmd_bnd, nnp):
    """--init: PID 1 (the reaper) holds no capability, the container's bounding set, the
    container's user and no_new_privs; it hides the host's command line and environment."""
    out = run(rl, bbroot, "--rm", "--init", *opts, "sh", "-c",
              "cat /proc/1/status; echo ==; cat /proc/self/status; echo ==; tr '\\0' '\\n' < /proc/1/cmdline; "
              "echo ==; tr '\\0' '\\n' < /proc/1/environ", check=True).stdout
    init, cmd, cmdline, environ = out.split("==\n")
    init, cmd = _status(init), _status(cmd)
    assert init["Name"] == "init"
    assert int(init["CapEff"], 16) == 0 and int(init["CapPrm"], 16) == 0
    assert int(init["CapBnd"], 16) == cmd_bnd and int(cmd["CapBnd"], 16) == cmd_bnd
    assert int(cmd["CapEff"], 16) == cmd_eff
    assert int(init["NoNewPrivs"]) == nnp and int(cmd["NoNewPrivs"]) == nnp
    assert init["Uid"].split()[:2] == cmd["Uid"].split()[:2]
    assert cmdline.split() == ["init"]                   # no host paths (python, the venv, the store)
    assert environ.split() == []                         # nor the host user's environment


def test_no_host_fd_leaks(rl, bbroot, tmp_path):
    f = open(tmp_path / "secret", "w")
    try:
        os.set_inheritable(f.fileno(), True)
        cp = subprocess.run([*rl.argv0, "run", "--rm", "--network", "none", "--rootfs", bbroot, "ls",
                             "/proc/self/fd"], env=rl.env, capture_output=True, text=True,
                            pass_fds=(f.fileno(),), timeout=60)
    finally:
        f.close()
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.split()) == ["0", "1", "2", "3"]   # 3: ls's own directory fd


def test_read_only_and_tmpfs(rl, bbroot):
    cp = run(rl, bbroot, "--rm", "--read-only", "--tmpfs", "/scratch:size=1m", "sh", "-c",
             "echo ok > /scratch/f && cat /scratch/f; touch /nope")
    assert cp.stdout == "ok\n"
    assert cp.returncode != 0 and "Read-only file system" in cp.stderr


def test_env_workdir_user_entrypoint(rl, bbroot, tmp_path):
    ef = tmp_path / "env"
    ef.write_text("# comment\nFROMFILE=yes\n")
    out = run(rl, bbroot, "--rm", "-e", "A=1", "-e", "B=two words", "--env-file", str(ef), "-w", "/made/here",
              "-u", "tester", "sh", "-c", "echo $A; echo $B; echo $FROMFILE; pwd; id -un; echo $HOME",
              check=True).stdout.splitlines()
    assert out == ["1", "two words", "yes", "/made/here", "tester", "/home/tester"]
    out = run(rl, bbroot, "--rm", "--entrypoint", "echo", "hello", "world", check=True).stdout
    assert out == "hello world\n"


def test_init_reaps_and_forwards(rl, bbroot):
    p = rl.popen("run", "--rm", "--network", "none", "--init", "--rootfs", bbroot, "sh", "-c",
                 "trap 'echo got-term; exit 7' TERM; (sleep 0.1 &); echo ready; while true; do sleep 0.1; done",
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)   # run forwards it to the container
    out, err = p.communicate(timeout=30)
    assert p.returncode == 7, err
    assert out == b"got-term\n"


def test_init_as_user_forwards_signals_and_takes_exec(rl, bbroot):
    """The reaper runs as the container's user without capabilities: it still forwards
    `stop`'s signal to the command, and `exec`/`top` still join the container through it."""
    run(rl, bbroot, "-d", "--init", "--name", "iu", "-u", "1000", "--cap-drop", "ALL", "sh", "-c",
        "trap 'exit 6' TERM; while true; do sleep 0.1; done", check=True)
    status = _status(rl.ok("exec", "iu", "cat", "/proc/1/status"))
    assert status["Name"] == "init" and status["Uid"].split()[0] == "1000" and int(status["CapEff"], 16) == 0
    assert rl.ok("exec", "iu", "id", "-u") == "1000\n"
    assert "trap" in rl.ok("top", "iu")
    assert rl.ok("stop", "iu") == "iu\n"
    assert rl.ok("wait", "iu") == "6\n"
    rl.ok("rm", "iu")
    # a user outside the mapping: one clear error (the reaper fails first, the command never runs)
    cp = run(rl, bbroot, "--rm", "--init", "-u", "4000000", "true")
    assert cp.returncode == 125 and "cannot switch to user" in cp.stderr and "Traceback" not in cp.stderr


def test_signal_forwarding_without_init(rl, bbroot):
    p = rl.popen("run", "--rm", "--network", "none", "--rootfs", bbroot, "sh", "-c",
                 "trap 'exit 9' USR1; echo ready; while true; do sleep 0.1; done",
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGUSR1)
    p.communicate(timeout=30)
    assert p.returncode == 9


def test_stdin_with_i(rl, bbroot):
    cp = run(rl, bbroot, "--rm", "-i", "sh", "-c", "tr a-z A-Z", input="hello\n", check=True)
    assert cp.stdout == "HELLO\n"
    cp = run(rl, bbroot, "--rm", "sh", "-c", "cat", input="ignored\n", check=True)
    assert cp.stdout == ""


# ---------------------------------------------------------------------------
# --rm leaves nothing

def test_run_rm_leaves_nothing(rl, bbroot):
    for net in ("none", "default"):
        cp = rl("run", "--rm", "--network", net, "--hostname", f"leak-{net}", "-v", "/anon", "--rootfs", bbroot,
                "sh", "-c", "echo data > /anon/f; echo hi > /tmp/x; sleep 0.2 & true")
        assert cp.returncode == 0, cp.stderr
        assert list((rl.root / "containers").iterdir()) == []
        assert [v for v in (rl.root / "volumes").iterdir()] == []
        assert procs_with_hostname(f"leak-{net}") == []
        assert str(rl.root) not in Path("/proc/self/mountinfo").read_text()
    assert leaked_pastas(rl.root) == []


# ---------------------------------------------------------------------------
# lifecycle: -d, ps, logs, stop, rm, exec, wait, restart, rename, prune, inspect, top

def test_detached_ps_logs_stop_rm(rl, bbroot):
    cid = run(rl, bbroot, "-d", "--name", "ticker", "-l", "role=test", "sh", "-c",
              "trap 'echo bye; exit 0' TERM; i=0; while true; do echo line $i; echo err $i >&2; i=$((i+1)); "
              "sleep 0.2; done", check=True).stdout.strip()
    assert len(cid) == 64
    ps = rl.ok("ps")
    assert "ticker" in ps and cid[:12] in ps and "Up " in ps
    assert rl.ok("ps", "-q") == cid[:12] + "\n"
    assert rl.ok("ps", "--no-trunc", "-q") == cid + "\n"
    assert rl.ok("ps", "--filter", "label=role=test", "--format", "{{.Names}}") == "ticker\n"
    assert rl.ok("ps", "--filter", "status=exited", "-q") == ""
    j = json.loads(rl.ok("ps", "--format", "json").splitlines()[0])
    assert j["Names"] == "ticker" and j["State"] == "running"
    f = rl.popen("logs", "-f", "ticker", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    assert rl.ok("stop", "ticker") == "ticker\n"
    out, err = f.communicate(timeout=30)     # logs -f ends when the container stops
    assert out.startswith(b"line 0\nline 1\n") and out.endswith(b"bye\n")
    assert err.startswith(b"err 0\n")
    assert "Exited (0)" in rl.ok("ps", "-a")
    assert rl.ok("ps") .count("\n") == 1     # only the header
    cp = rl("logs", "--tail", "3", "ticker", check=True)
    assert cp.stdout.splitlines()[-1] == "bye"
    assert len(cp.stdout.splitlines()) + len(cp.stderr.splitlines()) == 3   # the last 3 of both streams
    ts = rl.ok("logs", "-t", "--tail", "1", "ticker")
    assert ts.split(" ", 1)[0].endswith("Z") and ts.endswith(" bye\n")
    assert rl.ok("logs", "--since", "1h", "ticker").startswith("line 0")
    assert rl.ok("logs", "--since", "2100-01-01T00:00:00Z", "ticker") == ""
    insp = json.loads(rl.ok("inspect", "ticker"))[0]
    assert insp["State"]["Status"] == "exited" and insp["State"]["ExitCode"] == 0
    assert insp["Name"] == "/ticker" and insp["Config"]["Labels"] == {"role": "test"}
    assert rl.ok("rm", "ticker") == "ticker\n"
    assert rl.ok("ps", "-aq") == ""
    cp = rl("logs", "ticker")
    assert cp.returncode == 1 and "no such container" in cp.stderr


def test_exec_into_running_container(rl, bbroot):
    run(rl, bbroot, "-d", "--name", "ex", "-e", "FOO=bar", "sleep", "60", check=True)
    out = rl.ok("exec", "ex", "sh", "-c", "echo $FOO; echo pid=$$; ps -o pid,args | grep -c '^ *1 sleep 60'; id -u")
    lines = out.split()
    assert lines[0] == "bar" and lines[1] != "pid=1" and lines[2] == "1" and lines[3] == "0"
    assert rl("exec", "ex", "sh", "-c", "exit 42").returncode == 42
    cp = rl("exec", "ex", "no-such-cmd")
    assert cp.returncode == 127 and "not found" in cp.stderr
    assert rl("exec", "ex", "/etc/passwd").returncode == 126
    out = rl.ok("exec", "-u", "1000:1000", "-w", "/tmp", "-e", "X=y", "ex", "sh", "-c", "id -u; pwd; echo $X")
    assert out.split() == ["1000", "/tmp", "y"]
    assert rl.ok("exec", "-i", "ex", "cat", input="piped\n") == "piped\n"
    rl.ok("exec", "-d", "ex", "sh", "-c", "echo detached > /tmp/d")
    time.sleep(0.3)
    assert rl.ok("exec", "ex", "cat", "/tmp/d") == "detached\n"
    top = rl.ok("top", "ex")
    assert "sleep 60" in top and top.startswith("UID")
    rl.ok("stop", "-t", "0", "ex")
    cp = rl("exec", "ex", "true")
    assert cp.returncode == 1 and "not running" in cp.stderr
    rl.ok("rm", "-f", "ex")


_SESSION = 'read -r pid comm state ppid pgrp sid tty rest < /proc/self/stat; echo "S$sid:$$:T$tty"'


def test_exec_without_a_tty_leaves_the_callers_terminal(rl, bbroot):
    """`exec` without -t: the command gets a session of its own (as `run` gives it), else the
    caller's terminal stays its controlling terminal and TIOCSTI on it types commands into
    the user's shell once `exec` returns."""
    run(rl, bbroot, "-d", "--name", "sess", "sleep", "60", check=True)
    try:
        for opts in ([], ["-i"]):
            out = rl.ok("exec", *opts, "sess", "sh", "-c", _SESSION, input="")
            sid, pid, tty = re.fullmatch(r"S(\d+):(\d+):T(\d+)\n", out).groups()
            assert sid == pid and tty == "0", (opts, out)    # sid 0: a session outside the container
        pexpect = pytest.importorskip("pexpect")
        # from a terminal: the exec'd command must not have it as its controlling terminal
        ex = pexpect.spawn(rl.argv0[0], [*rl.argv0[1:], "exec", "sess", "sh", "-c", _SESSION], env=rl.env,
                           timeout=20)
        ex.expect(r"S(\d+):(\d+):T(\d+)")
        sid, pid, tty = ex.match.groups()
        ex.expect(pexpect.EOF)
        ex.close()
        assert ex.exitstatus == 0
        assert sid == pid and tty == b"0", (sid, pid, tty)
    finally:
        rl("rm", "-f", "sess")


def test_top_names_users_from_the_container_passwd(rl, bbroot, tmp_path):
    """top (default and with ps options, as docker top) shows the container's uids named from
    its own /etc/passwd, read from the host side: a symlink there resolves inside the
    container, a FIFO is not read (top does not hang)."""
    run(rl, bbroot, "-d", "--name", "tp", "sleep", "60", check=True)
    rl.ok("exec", "-d", "-u", "1000", "tp", "sleep", "61")
    rl.ok("exec", "-d", "-u", "4321", "tp", "sleep", "62")     # (exec -d returns once it exec'ed)

    def users(*ps_args):
        out = rl.ok("top", "tp", *ps_args).splitlines()
        col = out[0].split().index("USER" if "aux" in ps_args else "UID")
        return {ln.split()[-1]: ln.split()[col] for ln in out[1:] if "sleep" in ln}

    want = {"60": "root", "61": "tester", "62": "4321"}
    assert users() == want
    assert users("-ef") == want
    assert users("aux") == want
    out = rl.ok("top", "tp", "-eo", "pid,uid,user,args").splitlines()
    assert any(ln.split()[1:3] == ["1000", "tester"] for ln in out), out
    # a hostile passwd: an absolute symlink to a host file, then a FIFO
    host = tmp_path / "hostpasswd"
    host.write_text("HOSTLEAK:x:0:0::/:/bin/sh\ntesterleak:x:1000:1000::/:/bin/sh\n")
    rl.ok("exec", "tp", "sh", "-c", f"rm /etc/passwd; ln -s {host} /etc/passwd")
    assert users() == {"60": "0", "61": "1000", "62": "4321"}
    rl.ok("exec", "tp", "sh", "-c", "rm /etc/passwd; mkfifo /etc/passwd")
    assert users("-ef") == {"60": "0", "61": "1000", "62": "4321"}
    rl.ok("rm", "-f", "tp")


def test_rm_running_refused_then_forced(rl, bbroot):
    run(rl, bbroot, "-d", "--name", "busy", "sleep", "60", check=True)
    cp = rl("rm", "busy")
    assert cp.returncode == 1 and "running" in cp.stderr
    assert "busy" in rl.ok("ps")
    rl.ok("rm", "-f", "busy")
    assert rl.ok("ps", "-aq") == ""


def test_bad_input(rl, bbroot):
    for args, words in ((["-v", "relative/path:/x"], "absolute"), (["-v", "/a:b"], "absolute"),
                        (["-v", "/a:/b:bogus"], "unknown option"), (["-e", "=x"], "environment variable"),
                        (["-u", "nobody-here"], "unable to find user"), (["--network", "weird"], "network"),
                        (["--cap-add", "NOT_A_CAP"], "capability"), (["--tmpfs", "rel"], "absolute")):
        cp = run(rl, bbroot, "--rm", *args, "true")
        assert cp.returncode == 125, (args, cp.stderr)
        assert words in cp.stderr, (args, cp.stderr)
        assert "Traceback" not in cp.stderr
    run(rl, bbroot, "--name", "taken", "true", check=True)
    cp = run(rl, bbroot, "--name", "taken", "true")
    assert cp.returncode == 125 and "already in use" in cp.stderr
    cp = run(rl, bbroot, "--rm", "-v", "/no/such/host/dir:/x", "true")
    assert cp.returncode == 125 and "does not exist" in cp.stderr


@pytest.mark.parametrize("limit", [("--memory", "64m"), ("--cpus", "0.5"), ("--pids-limit", "100")])
def test_resource_limits_refused_without_delegation(rl, bbroot, limit):
    from rootless.doctor import cgroup_v2_delegation

    ok, detail, _ = cgroup_v2_delegation()
    cp = run(rl, bbroot, "--rm", *limit, "true")
    if ok:
        assert cp.returncode == 0, cp.stderr
    else:
        assert cp.returncode == 125 and "cgroup" in cp.stderr and "Hint:" in cp.stderr, cp.stderr
        assert "delegated" in cp.stderr and "Traceback" not in cp.stderr
        assert len(cp.stderr.splitlines()) == 2     # Error: ... + Hint: ...
        assert rl.ok("ps", "-aq") == ""     # nothing was created
    # without limits it runs, delegation or not (hybrid cgroups: where crun refuses)
    assert run(rl, bbroot, "--rm", "true").returncode == 0


def test_ps_shows_truth_after_monitor_and_container_die(rl, bbroot):
    cid = run(rl, bbroot, "-d", "sleep", "60", check=True).stdout.strip()
    st = json.loads((rl.root / "containers" / cid / "state.json").read_text())
    os.kill(st["monitor_pid"], signal.SIGKILL)
    os.kill(st["pid"], signal.SIGKILL)
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{st['pid']}") and time.time() < deadline:
        time.sleep(0.05)
    assert rl.ok("ps", "-q") == ""
    assert "Exited" in rl.ok("ps", "-a")
    rl.ok("rm", cid)


def _set_state(rl, name: str, **changes) -> None:
    cid = json.loads(rl.ok("inspect", name))[0]["Id"]
    p = rl.root / "containers" / cid / "state.json"
    st = json.loads(p.read_text())
    st.update(changes)
    p.write_text(json.dumps(st))


@pytest.mark.parametrize("case", ["reused-pid", "other-boot"])
def test_ps_and_rm_leave_alone_a_process_that_reused_the_pid(rl, bbroot, case):
    """state.json names a live process that is not the container's: the pid was reused
    (another start time), or the pid and start time are from before a reboot (another
    boot_id). ps shows Exited; rm -f, stop and kill do not touch that process."""
    from rootless.runtime.state import current_boot_id, proc_start_time

    other = subprocess.Popen(["sleep", "60"])
    try:
        start = proc_start_time(other.pid)
        run(rl, bbroot, "--name", "old", "true", check=True)
        if case == "reused-pid":
            fake = dict(pid_start=start + 1, monitor_start=start + 1, boot_id=current_boot_id())
        else:
            fake = dict(pid_start=start, monitor_start=start, boot_id="0f0f0f0f-0000-4000-8000-000000000000")
        _set_state(rl, "old", status="running", pid=other.pid, monitor_pid=other.pid, exit_code=None, **fake)
        assert rl.ok("ps", "-q") == ""
        assert "Exited" in rl.ok("ps", "-a", "--filter", "name=old")
        assert rl("stop", "-t", "0", "old").returncode == 0
        assert rl("kill", "old").returncode != 0          # not running
        assert rl.ok("rm", "-f", "old") == "old\n"
        assert other.poll() is None, "an unrelated process was signalled"
    finally:
        other.kill()
        other.wait()


def test_rm_f_of_a_starting_container_signals_no_process_group(rl, bbroot):
    """A container still starting has no pid yet (0): kill(0, SIGKILL) would hit rm's own
    process group. (rm waits up to 10 s for the monitor to record the state, then removes.)"""
    from rootless.runtime.state import current_boot_id, proc_start_time

    run(rl, bbroot, "--name", "st", "true", check=True)
    monitor = subprocess.Popen(["sleep", "60"])      # stands in for a monitor busy with the set-up
    try:
        _set_state(rl, "st", status="starting", pid=0, monitor_pid=monitor.pid,
                   monitor_start=proc_start_time(monitor.pid), boot_id=current_boot_id())
        cp = subprocess.run([*rl.argv0, "rm", "-f", "st"], env=rl.env, capture_output=True, text=True,
                            timeout=60, start_new_session=True)    # a regression kills only rm
        assert cp.returncode == 0 and cp.stdout == "st\n", cp
    finally:
        monitor.kill()
        monitor.wait()


def test_network_helper_reaped_after_monitor_and_container_die(rl, bbroot):
    """pasta does not notice that a namespace it joined by pid is gone: when the monitor that
    would stop it is SIGKILLed, the next command that looks at the container stops it."""
    cid = run(rl, bbroot, "-d", "--network", "pasta", "sleep", "60", check=True).stdout.strip()
    st = json.loads((rl.root / "containers" / cid / "state.json").read_text())
    helper = st["network"]["helper_pid"]
    assert "pasta" in open(f"/proc/{helper}/cmdline").read()
    os.kill(st["monitor_pid"], signal.SIGKILL)
    os.kill(st["pid"], signal.SIGKILL)
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{st['pid']}") and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(f"/proc/{helper}"), "pasta should outlive its container until reaped"
    assert "Exited" in rl.ok("ps", "-a")
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{helper}") and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{helper}"), "pasta leaked"
    recorded = json.loads((rl.root / "containers" / cid / "state.json").read_text())
    assert recorded["status"] == "exited" and recorded["network"] == {}
    rl.ok("rm", cid)


@pytest.mark.parametrize("how", [["rm", "-f"], ["stop", "-t", "0"]])
def test_network_helper_stopped_by_rm_f_and_stop_after_the_monitor_died(rl, bbroot, how):
    """The monitor was SIGKILLed while the container runs: rm -f (and stop) kill the container
    and must stop its pasta too (the monitor that would have is gone)."""
    from rootless.runtime.state import alive

    cid = run(rl, bbroot, "-d", "--network", "pasta", "sleep", "60", check=True).stdout.strip()
    st = json.loads((rl.root / "containers" / cid / "state.json").read_text())
    helper, helper_start = st["network"]["helper_pid"], st["network"]["helper_start"]
    assert "pasta" in open(f"/proc/{helper}/cmdline").read()
    os.kill(st["monitor_pid"], signal.SIGKILL)
    try:
        rl.ok(*how, cid)
        deadline = time.time() + 10
        while alive(helper, helper_start) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(helper, helper_start), "pasta leaked"
        assert not alive(st["pid"], st["pid_start"])
    finally:
        rl("rm", "-f", cid)
        if alive(helper, helper_start):
            os.kill(helper, signal.SIGKILL)


def test_wait_restart_rename_prune_port_create_start(rl, bbroot):
    cid = rl.ok("create", "--name", "c1", "--network", "none", "--rootfs", bbroot, "sh", "-c",
                "echo started; exit 3").strip()
    assert "Created" in rl.ok("ps", "-a")
    assert rl.ok("start", "c1") == "c1\n"
    assert rl.ok("wait", "c1") == "3\n"
    assert rl.ok("logs", "c1") == "started\n"
    rl.ok("rename", "c1", "c2")
    assert rl.ok("ps", "-a", "--format", "{{.Names}}") == "c2\n"
    assert rl("start", "-a", "c2").returncode == 3
    rl.ok("restart", "-t", "1", "c2")
    assert rl.ok("wait", "c2") == "3\n"
    assert rl.ok("logs", "c2").count("started") == 3
    assert rl.ok("port", "c2") == ""
    run(rl, bbroot, "-d", "--name", "keep", "sleep", "60", check=True)
    out = rl.ok("container", "prune", "-f")
    assert cid in out
    assert rl.ok("ps", "-a", "--format", "{{.Names}}") == "keep\n"
    rl.ok("kill", "-s", "TERM", "keep")     # PID 1 without a TERM handler ignores it (as in Docker)
    time.sleep(0.3)
    assert "keep" in rl.ok("ps")
    rl.ok("stop", "-t", "1", "keep")
    assert rl.ok("wait", "keep") == "137\n"


def test_prune_filters(rl, bbroot):
    """container prune applies until=, label= and label!= (Docker's), and refuses every other
    filter instead of ignoring it (which deleted every stopped container)."""
    def create(name, *opts):
        return rl.ok("create", "--name", name, "--network", "none", *opts, "--rootfs", bbroot, "true").strip()

    create("old", "-l", "keep=yes")
    create("mid", "-l", "tier=db")
    create("new", "-l", "tier=web")

    def names():
        return sorted(rl.ok("ps", "-a", "--format", "{{.Names}}").split())

    for bad in ("name=old", "status=exited", "until=yesterday", "labels=x"):
        cp = rl("container", "prune", "-f", "--filter", bad)
        assert cp.returncode == 125 and "Error:" in cp.stderr and "Traceback" not in cp.stderr, (bad, cp.stderr)
    cp = rl("container", "prune", "-f", "--filter", "until=1h", "--filter", "until=2h")
    assert cp.returncode == 125 and "more than one until" in cp.stderr
    assert names() == ["mid", "new", "old"]
    assert rl.ok("container", "prune", "-f", "--filter", "until=10m").startswith("Deleted Containers:\n\n")
    assert names() == ["mid", "new", "old"]
    created_mid = json.loads(rl.ok("inspect", "mid"))[0]["Created"]
    rl.ok("container", "prune", "-f", "--filter", "label!=keep", "--filter", f"until={created_mid}")
    assert names() == ["new", "old"]          # mid: created at the time, without keep
    rl.ok("container", "prune", "-f", "--filter", "label=tier=web")
    assert names() == ["old"]
    rl.ok("container", "prune", "-f", "--filter", "label!=keep=yes")
    assert names() == ["old"]
    rl.ok("container", "prune", "-f", "--filter", "until=0s")
    assert names() == []


def test_ps_filters(rl, bbroot, tmp_path):
    def create(name, *opts):
        return rl.ok("create", "--name", name, *opts, "--rootfs", bbroot, "sh", "-c", "exit 3").strip()

    a = create("a", "--network", "none", "-v", f"{tmp_path}:/data")
    create("b", "--network", "slirp4netns", "-p", "127.0.0.1:18080:80", "--expose", "7000-7001/udp")
    c = create("c", "--network", "none")
    assert rl("start", "-a", "c").returncode == 3

    def ps(*f):
        cp = rl("ps", "-a", "--format", "{{.Names}}", *[x for v in f for x in ("--filter", v)])
        assert cp.returncode == 0, cp.stderr
        return sorted(cp.stdout.split())

    assert ps(f"id={a[:12]}") == ["a"]
    assert ps("network=none") == ["a", "c"] and ps("network=slirp4netns") == ["b"]
    assert ps("publish=80") == ["b"] and ps("publish=80/tcp") == ["b"] and ps("publish=79-81") == ["b"]
    assert ps("publish=80/udp") == [] and ps("publish=18080") == []
    assert ps("expose=7001/udp") == ["b"] and ps("expose=80") == ["b"] and ps("expose=7001") == []
    assert ps(f"volume={tmp_path}") == ["a"] and ps("volume=/data") == ["a"]
    assert ps("exited=3") == ["c"] and ps("exited=0") == []
    assert ps("before=c") == ["a", "b"] and ps("since=a") == ["b", "c"]
    assert rl.ok("ps", "--filter", f"id={c}", "-q") == ""          # not running
    for bad, why in (("until=10m", "invalid filter 'until'"), ("health=healthy", "not supported"),
                     ("publish=x", "invalid filter"), ("exited=x", "invalid filter"), ("nope=1", "invalid")):
        cp = rl("ps", "-a", "--filter", bad)
        assert cp.returncode == 125 and why in cp.stderr and "Traceback" not in cp.stderr, (bad, cp.stderr)


def test_format_templates(rl, bbroot, tmp_path):
    """--format takes Go templates (range, if, with, variables, Docker's functions) and ps's
    {{.Label "k"}}."""
    rl.ok("create", "--name", "fmt", "--network", "none", "-l", "tier=web", "-v", f"{tmp_path}:/data:ro",
          "--tmpfs", "/t", "--rootfs", bbroot, "true")
    out = rl.ok("ps", "-a", "--format", '{{.Names}} {{.Label "tier"}}/{{.Label "none"}} {{.Names | upper}}')
    assert out == "fmt web/ FMT\n"
    out = rl.ok("inspect", "-f", "{{range .Mounts}}{{.Destination}}:{{if .RW}}rw{{else}}ro{{end}} {{end}}"
                "{{with .State}}{{.Status}}{{end}} {{len .Config.Labels}} {{json .Config.Labels}} "
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{end}} {{printf \"%.3s\" .Name}}", "fmt")
    assert out == '/data:ro created 1 {"tier":"web"} tier=web /fm\n'
    cp = rl("inspect", "-f", "{{range .Mounts}}", "fmt")
    assert cp.returncode == 125 and "template:" in cp.stderr and "Traceback" not in cp.stderr
    rl.ok("rm", "fmt")


def test_named_volume_survives_container_removal(rl, bbroot):
    run(rl, bbroot, "--rm", "-v", "data:/data", "sh", "-c", "echo persisted > /data/f; chown 1000:1000 /data/f",
        check=True)
    assert "data" in rl.ok("volume", "ls", "-q").split()
    assert run(rl, bbroot, "--rm", "-v", "data:/data", "sh", "-c", "cat /data/f; stat -c %u /data/f",
               check=True).stdout == "persisted\n1000\n"
    insp = json.loads(rl.ok("volume", "inspect", "data"))[0]
    assert insp["Name"] == "data" and insp["Mountpoint"].endswith("/volumes/data/_data")
    run(rl, bbroot, "--name", "user", "-v", "data:/data", "true", check=True)
    cp = rl("volume", "rm", "data")
    assert cp.returncode != 0 and "in use" in cp.stderr
    rl.ok("rm", "user")
    rl.ok("volume", "rm", "data")     # files owned by a subordinate id: removed in the userns
    assert rl.ok("volume", "ls", "-q") == ""
    rl.ok("volume", "create", "--label", "k=v", "v2")
    assert rl.ok("volume", "ls", "--format", "{{.Name}} {{.Driver}}") == "v2 local\n"
    assert "v2" in rl.ok("volume", "prune", "-a", "-f")


def test_cp_both_directions_preserving_modes(rl, bbroot, tmp_path):
    run(rl, bbroot, "-d", "--name", "cpt", "sleep", "60", check=True)
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    os.chmod(src / "sub" / "run.sh", 0o750)
    (src / "plain").write_text("plain\n")
    rl.ok("exec", "cpt", "mkdir", "/opt")
    rl.ok("cp", str(src), "cpt:/opt")
    out = rl.ok("exec", "cpt", "sh", "-c", "/opt/tree/sub/run.sh; stat -c '%a %u' /opt/tree/sub/run.sh /opt/tree/plain")
    assert out.splitlines() == ["ran", "750 0", "644 0"]
    rl.ok("exec", "cpt", "sh", "-c", "echo from-ctr > /etc/made; chmod 604 /etc/made")
    dest = tmp_path / "out"
    dest.mkdir()
    rl.ok("cp", "cpt:/etc/made", str(dest))
    assert (dest / "made").read_text() == "from-ctr\n"
    assert stat.S_IMODE(os.stat(dest / "made").st_mode) == 0o604
    rl.ok("cp", "cpt:/opt/tree", str(dest / "copy"))
    assert (dest / "copy" / "sub" / "run.sh").read_text().startswith("#!/bin/sh")
    rl.ok("stop", "-t", "0", "cpt")
    # a stopped container too (its root filesystem is mounted for the copy)
    rl.ok("cp", "cpt:/etc/made", str(dest / "again"))
    assert (dest / "again").read_text() == "from-ctr\n"
    cp = rl("cp", "cpt:/no/such", str(dest))
    assert cp.returncode == 1 and "no such" in cp.stderr.lower()


def test_cp_refuses_what_docker_refuses(rl, bbroot, tmp_path):
    """A directory never replaces a file (either direction); a trailing '/' needs a directory;
    a read-only destination is one clear line, not an errno."""
    ro = tmp_path / "ro"
    ro.mkdir()
    run(rl, bbroot, "-d", "--name", "cpr", "-v", f"{ro}:/ro:ro", "sleep", "60", check=True)
    rl.ok("exec", "cpr", "sh", "-c", "echo c > /tfile; mkdir -p /tdir/s; echo y > /tdir/s/y")
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    f = tmp_path / "f"
    f.write_text("host file\n")

    def refused(*args, why):
        cp = rl("cp", *args)
        assert cp.returncode == 1 and why in cp.stderr, (args, cp.stderr)
        assert "Traceback" not in cp.stderr and "Errno" not in cp.stderr
        assert len([x for x in cp.stderr.splitlines() if x.startswith("Error:")]) == 1

    refused(str(d), "cpr:/tfile", why="cannot copy a directory to a file")
    assert rl.ok("exec", "cpr", "cat", "/tfile") == "c\n"
    refused("cpr:/tdir", str(f), why="cannot copy a directory to a file")
    assert f.read_text() == "host file\n"
    refused("cpr:/etc/passwd/", str(tmp_path / "pw"), why="not a directory")
    refused(f"{f}/", "cpr:/", why="not a directory")
    refused("cpr:/tfile", f"{f}/", why="not a directory")
    refused(str(d), "cpr:/ro/", why="/ro/ is on a read-only file system")
    refused(str(f), "cpr:/ro/f", why="/ro/f is on a read-only file system")
    # what stays allowed: a file over a file, a directory to a new name
    rl.ok("cp", "cpr:/tfile", str(f))
    assert f.read_text() == "c\n"
    rl.ok("cp", "cpr:/tdir", str(tmp_path / "new"))
    assert (tmp_path / "new" / "s" / "y").read_text() == "y\n"
    rl.ok("rm", "-f", "cpr")


def test_networks(rl, bbroot):
    out = run(rl, bbroot, "--rm", "cat", "/proc/net/dev", check=True).stdout
    ifaces = [line.split(":")[0].strip() for line in out.splitlines()[2:]]
    assert ifaces == ["lo"]
    out = rl("run", "--rm", "--rootfs", bbroot, "cat", "/proc/net/dev", check=True).stdout
    ifaces = [line.split(":")[0].strip() for line in out.splitlines()[2:]]
    assert "lo" in ifaces and len(ifaces) >= 2     # pasta's interface
    resolv = rl("run", "--rm", "--rootfs", bbroot, "cat", "/etc/resolv.conf", check=True).stdout
    assert "nameserver" in resolv
    slirp = rl("run", "--rm", "--network", "slirp4netns", "--rootfs", bbroot, "sh", "-c",
               "ip -o -4 addr show tap0; cat /etc/resolv.conf", check=True).stdout
    assert "10.0.2.100/24" in slirp and "nameserver 10.0.2.3" in slirp
    host = rl("run", "--rm", "--network", "host", "--rootfs", bbroot, "cat", "/proc/net/dev", check=True).stdout
    assert sorted(x.split(":")[0].strip() for x in host.splitlines()[2:]) == \
        sorted(x.split(":")[0].strip() for x in Path("/proc/net/dev").read_text().splitlines()[2:])


def test_interactive_tty_with_pexpect(rl, bbroot):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(rl.argv0[0], [*rl.argv0[1:], "run", "-it", "--name", "tty1", "--network", "none",
                                        "--rootfs", bbroot, "sh"], env=rl.env, timeout=20, dimensions=(30, 100))
    child.expect("# ")
    child.sendline("tty; ls /dev/console; echo S$(stty size)E")
    child.expect(r"S(\d+ \d+)E")
    assert child.match.group(1) == b"30 100"
    assert b"/dev/pts/0" in child.before and b"/dev/console" in child.before
    child.setwinsize(40, 120)      # SIGWINCH reaches the container
    time.sleep(0.3)
    child.sendline("echo W$(stty size)W")
    child.expect(r"W(\d+ \d+)W")
    assert child.match.group(1) == b"40 120"
    child.sendcontrol("p")
    child.sendcontrol("q")         # detach: the container keeps running
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "tty1" in rl.ok("ps")
    ex = pexpect.spawn(rl.argv0[0], [*rl.argv0[1:], "exec", "-it", "tty1", "sh"], env=rl.env, timeout=20)
    ex.expect("# ")
    ex.sendline("echo X$((6*7))Y")
    ex.expect("X42Y")
    ex.sendline("exit 4")
    ex.expect(pexpect.EOF)
    ex.close()
    assert ex.exitstatus == 4
    # the logs recorded the session
    assert "S30 100E" in rl.ok("logs", "tty1")
    child = pexpect.spawn(rl.argv0[0], [*rl.argv0[1:], "run", "-it", "--rm", "--network", "none",
                                        "--rootfs", bbroot, "sh"], env=rl.env, timeout=20)
    child.expect("# ")
    child.sendline("exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5
    # with --init the shell is not PID 1 but still owns the terminal (foreground process group)
    child = pexpect.spawn(rl.argv0[0], [*rl.argv0[1:], "run", "-it", "--rm", "--init", "--network", "none",
                                        "--rootfs", bbroot, "sh"], env=rl.env, timeout=20)
    child.expect("# ")
    child.sendline("echo $$ $(cat /proc/1/comm)")
    child.expect(r"\r\n(\d+) init\r\n")
    assert child.match.group(1) != b"1"
    child.sendline("exit 6")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 6
    rl.ok("rm", "-f", "tty1")


def test_attach_after_detach_with_pexpect(rl, bbroot):
    """ctrl-p ctrl-q detaches from run -it; attach (and start -ai of the running container)
    comes back: keystrokes reach the shell, its output and the terminal size come back."""
    pexpect = pytest.importorskip("pexpect")

    def cli(*args, **kw):
        return pexpect.spawn(rl.argv0[0], [*rl.argv0[1:], *args], env=rl.env, timeout=20, **kw)

    child = cli("run", "-it", "--name", "att", "--network", "none", "--rootfs", bbroot, "sh",
                dimensions=(30, 100))
    child.expect("# ")
    child.sendcontrol("p")
    child.sendcontrol("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "att" in rl.ok("ps")
    a = cli("attach", "att", dimensions=(40, 120))
    a.sendline("echo X$((6*7))Y; echo S$(stty size)E")
    a.expect("X42Y")
    a.expect(r"S(\d+ \d+)E")
    assert a.match.group(1) == b"40 120"      # the attaching terminal's size
    a.setwinsize(25, 90)
    a.sendline("echo W$(stty size)W")
    a.expect(r"W(\d+ \d+)W")
    assert a.match.group(1) == b"25 90"
    a.sendcontrol("p")
    a.sendcontrol("q")
    a.expect(pexpect.EOF)
    a.close()
    assert a.exitstatus == 0 and "att" in rl.ok("ps")
    # other detach keys; then start -ai on the running container attaches, and ends with its status
    a = cli("attach", "--detach-keys", "ctrl-a,x", "att")
    a.sendline("echo A$((1+1))A")
    a.expect("A2A")
    a.sendcontrol("a")
    a.send("x")
    a.expect(pexpect.EOF)
    a.close()
    assert a.exitstatus == 0
    b = cli("start", "-ai", "att")
    b.sendline("echo B$((2+2))B; exit 7")
    b.expect("B4B")
    b.expect(pexpect.EOF)
    b.close()
    assert b.exitstatus == 7
    assert "Exited (7)" in rl.ok("ps", "-a")
    cp = rl("attach", "att")
    assert cp.returncode == 1 and "start it first" in cp.stderr
    rl.ok("rm", "att")


def test_attach_without_a_tty(rl, bbroot):
    """-d -i: the container's stdin stays open; attach sends stdin and gets stdout and stderr
    apart, detaches with the keys, and ends with the container's exit status."""
    run(rl, bbroot, "-d", "-i", "--name", "ni", "sh", "-c",
        "while read l; do echo out:$l; echo err:$l >&2; [ $l = quit ] && exit 9; done", check=True)

    def attach(*opts):
        return subprocess.Popen([*rl.argv0, "attach", *opts, "ni"], env=rl.env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def line(f) -> bytes:       # (a deadline, so that a regression fails instead of hanging)
        assert select.select([f], [], [], 30)[0], "no output from attach"
        return f.readline()

    def send(p, data: bytes) -> None:
        p.stdin.write(data)
        p.stdin.flush()

    clients = [attach()]
    try:
        p = clients[0]
        send(p, b"hello\n")
        assert line(p.stdout) == b"out:hello\n" and line(p.stderr) == b"err:hello\n"
        send(p, b"\x10\x11")      # ctrl-p ctrl-q
        assert p.wait(20) == 0
        assert "ni" in rl.ok("ps")
        p = attach()
        q = attach("--no-stdin")        # output only, from the moment it is attached
        clients += [p, q]
        # q's attach has no visible moment: ping through p until q sees one
        deadline = time.monotonic() + 30
        while not select.select([q.stdout], [], [], 0.5)[0]:
            assert time.monotonic() < deadline, "attach --no-stdin got no output"
            send(p, b"ping\n")
        got = line(q.stdout)
        assert got == b"out:ping\n"
        send(p, b"again\n")
        while got == b"out:ping\n":
            got = line(q.stdout)
        assert got == b"out:again\n"
        send(p, b"quit\n")
        p.stdin.close()
        assert p.wait(20) == 9 and q.wait(20) == 9
        assert p.stdout.read().endswith(b"out:again\nout:quit\n") and q.stdout.read() == b"out:quit\n"
        assert rl.ok("logs", "ni").startswith("out:hello\nout:ping\n")
    finally:
        for x in clients:
            if x.poll() is None:
                x.kill()
                x.wait()
        rl("rm", "-f", "ni")


@pytest.mark.parametrize("driver,fstype", [("fuse-overlayfs", "fuse.fuse-overlayfs"), ("vfs", None),
                                           ("overlay", "overlay")])
def test_storage_drivers(rl, bbroot, driver, fstype):
    cfg = rl.home / ".config" / "rootless" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f'[storage]\ndriver = "{driver}"\n')
    assert json.loads(rl.ok("info", "--format", "json"))["store"]["storage_driver"] == driver
    out = run(rl, bbroot, "--name", "d", "sh", "-c", "stat -c %u /home/tester/owned-by-1000; echo x > /f; "
              "rm /etc/passwd; grep ' / ' /proc/mounts | cut -d' ' -f3", check=True).stdout.split()
    assert out[0] == "1000"
    if fstype:
        assert out[1] == fstype
    cid = json.loads(rl.ok("inspect", "d"))[0]["Id"]
    written = rl.root / "containers" / cid / ("rootfs" if driver == "vfs" else "upper") / "f"
    assert written.read_text() == "x\n"
    assert Path(bbroot, "etc/passwd").exists() and not Path(bbroot, "f").exists()
    # a second start keeps the container's own changes
    assert run(rl, bbroot, "--rm", "sh", "-c", "ls /etc/passwd", check=True).stdout == "/etc/passwd\n"
    assert rl("start", "-a", "d").returncode == 0
    rl.ok("rm", "d")
    assert not (rl.root / "containers" / cid).exists()


def test_stop_signal_mount_and_ps_last(rl, bbroot, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "f").write_text("via --mount\n")
    run(rl, bbroot, "-d", "--name", "sig", "--stop-signal", "USR1", "--mount",
        f"type=bind,source={tmp_path / 'm'},target=/m,readonly", "sh", "-c",
        "trap 'exit 5' USR1; while true; do sleep 0.1; done", check=True)
    assert rl.ok("exec", "sig", "cat", "/m/f") == "via --mount\n"
    assert rl("exec", "sig", "touch", "/m/g").returncode != 0
    run(rl, bbroot, "--name", "second", "true", check=True)
    assert rl.ok("ps", "-l", "--format", "{{.Names}}") == "second\n"
    assert rl.ok("ps", "-n", "2", "--format", "{{.Names}}").split() == ["second", "sig"]
    assert rl.ok("stop", "sig") == "sig\n"        # USR1, not TERM: the trap runs
    assert rl.ok("wait", "sig") == "5\n"
    rl.ok("rm", "sig", "second")


# ---------------------------------------------------------------------------
# storage: the fallback chain kernel overlay -> fuse-overlayfs -> vfs (copy)

@pytest.fixture(scope="session")
def deep_rootfs(images, tmp_path_factory, unprivileged) -> str:
    """The busybox root at a path so long (~3970 bytes) that the kernel overlay refuses it:
    mount(2) copies one page of options and lowerdir=PATH,upperdir=..,workdir=.. is more.
    fuse-overlayfs (options on its command line) and vfs (a copy) take any path."""
    from rootless.storage import remove_tree

    base = tmp_path_factory.mktemp("deep")
    d = base
    while len(str(d)) < 3960:
        d = d / ("d" * min(200, 3960 - len(str(d))))
    top = d.parent
    while top.parent != base:
        top = top.parent
    yield str(busybox_rootfs(images, d / "rootfs"))
    remove_tree(top)


def _root_fstype(out: str) -> str:
    return out.split()[0]


def test_storage_auto_uses_the_kernel_overlay_without_warning(rl, bbroot):
    cp = run(rl, bbroot, "--rm", "sh", "-c", "grep ' / ' /proc/mounts | cut -d' ' -f3", check=True)
    assert cp.stdout == "overlay\n"
    assert "WARNING" not in cp.stderr


def test_storage_falls_back_to_fuse_overlayfs_when_the_kernel_overlay_refuses(rl, deep_rootfs):
    cp = run(rl, deep_rootfs, "--name", "fb", "sh", "-c",
             "grep ' / ' /proc/mounts | cut -d' ' -f3; stat -c %u /home/tester/owned-by-1000; echo x > /f",
             check=True)
    assert cp.stdout.split() == ["fuse.fuse-overlayfs", "1000"]
    warnings = [ln for ln in cp.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1, cp.stderr
    assert "kernel overlay" in warnings[0] and "using fuse-overlayfs" in warnings[0]
    cid = json.loads(rl.ok("inspect", "fb"))[0]["Id"]
    assert (rl.root / "containers" / cid / "upper" / "f").read_text() == "x\n"
    assert not Path(deep_rootfs, "f").exists()
    rl.ok("rm", "fb")


def test_storage_falls_back_to_a_copy_when_fuse_overlayfs_is_missing_too(rl, deep_rootfs):
    cfg = rl.home / ".config" / "rootless" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f'[storage]\nmount_program = "{rl.base}/no-such-fuse-overlayfs"\n')
    cp = run(rl, deep_rootfs, "--name", "cp", "sh", "-c",
             "grep ' / ' /proc/mounts | cut -d' ' -f3; stat -c %u /home/tester/owned-by-1000; "
             "cat /f 2>/dev/null || echo none; echo x > /f", check=True)
    fstype, owner, before = cp.stdout.split()
    assert fstype not in ("overlay", "fuse.fuse-overlayfs") and owner == "1000" and before == "none"
    warnings = [ln for ln in cp.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1, cp.stderr
    assert "copy" in warnings[0] and "install fuse-overlayfs" in warnings[0]
    cid = json.loads(rl.ok("inspect", "cp"))[0]["Id"]
    assert (rl.root / "containers" / cid / "rootfs" / "f").read_text() == "x\n"
    assert not Path(deep_rootfs, "f").exists()
    # the next start keeps the copy (and the container's change)
    assert rl.ok("start", "-a", "cp").split() == [fstype, "1000", "x"]
    rl.ok("rm", "cp")
    assert not (rl.root / "containers" / cid).exists()
