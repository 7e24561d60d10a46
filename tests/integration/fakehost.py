"""A stand-in host for network tests, made of namespaces, with a remote client and a resolver on its loopback.

    unshare -Urnm --map-auto python fakehost.py RESOLV_CONF SCENARIO [ARGS...]

prints one JSON line with what the scenario saw. As root of the new user
namespace (uid 0 = the test user, 1.. = its subordinate ids) it builds

* the "host": this network namespace, ``lo`` up, a veth ``v0`` 10.250.0.2/24
  with a default route via 10.250.0.1 (nobody is there: nothing leaves), and
  RESOLV_CONF bind-mounted on /etc/resolv.conf in this mount namespace;
* a "remote" network namespace on the far end of the veth (``v1``
  10.250.0.7/24): a client that is not on the host's loopback;
* a DNS server on the host's 127.0.0.1:53 (answers every A question with
  192.0.2.77 and records the names), like systemd-resolved's stub;

then runs the scenario's rootless side as uid 1000 of that namespace (an
unprivileged user, as in real life: pasta refuses to run as root), with the
real ``rootless.network`` code: ``plan_network``, ``start``, ``stop`` for a
"container" made by ``unshare -Urn`` (its own user and network namespace).

Scenarios:

* ``publish MODE SPEC``: a TCP server on the container's port 80 that answers
  each connection with the client address it sees; published with ``-p
  SPEC`` through ``--network MODE``; the "host" connects from 127.0.0.2 (to
  127.0.0.1); unless SPEC is on a loopback address, the remote namespace
  from 10.250.0.7 (to 10.250.0.2), twice; when SPEC is HOSTPORT:80 (every
  address), the "host" from [::1] (to [::1]) as well.
  Prints ``{"local": ADDR, "remote": ADDR, "remote_again": ADDR, "local6":
  ADDR, "rules": "ip rule" in the container, "helper_alive": is pasta (or
  slirp4netns) still running after all that}``.
* ``dns``: ``--network pasta``; prints the container's resolv.conf, the
  answer of ``nslookup outside.test`` asked of its first nameserver from
  inside, and the names the resolver on the host's 127.0.0.1 saw.

Everything stays in these namespaces: nothing is sent anywhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST_IP, GATEWAY, REMOTE_IP = "10.250.0.2", "10.250.0.1", "10.250.0.7"
USER = 1000      # the unprivileged user inside the fake host's user namespace

SERVER = r"""
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(16)
print("listening", flush=True)
while True:
    c, a = s.accept()
    c.sendall(a[0].encode() + b"\n")
    c.close()
"""

CLIENT = r"""
import socket, sys, time
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(8):
    try:
        c = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET)
        c.bind((src, 0))
        c.settimeout(2)
        c.connect((dst, port))
        data = c.recv(100).decode().strip()
        c.close()
        if data:
            print(data)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
print("no answer")
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


class Resolver:
    """The host's DNS server on 127.0.0.1:53."""

    def __init__(self):
        from rootless.network.dns import RR, TYPE_A, build_response, parse_message

        self.seen: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))

        def loop():
            while True:
                data, addr = self.sock.recvfrom(4096)
                q = parse_message(data)
                name = q.questions[0].name
                self.seen.append(name)
                answers = [RR(name, TYPE_A, 30, "192.0.2.77")] if q.questions[0].qtype == TYPE_A else []
                self.sock.sendto(build_response(q, answers), addr)

        threading.Thread(target=loop, daemon=True).start()


def setup(resolv: str) -> subprocess.Popen:
    """The host's network and /etc/resolv.conf; returns the process that holds the remote namespace."""
    sh("mount", "--bind", resolv, "/etc/resolv.conf")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    remote = subprocess.Popen(["unshare", "-n", "sleep", "600"])
    me = os.stat("/proc/self/ns/net").st_ino
    for _ in range(200):
        try:
            if os.stat(f"/proc/{remote.pid}/ns/net").st_ino != me:
                break
        except OSError:
            pass
        time.sleep(0.01)
    sh("ip", "link", "set", "v1", "netns", str(remote.pid))
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", "v0")
    sh("ip", "link", "set", "v0", "up")
    sh("ip", "route", "add", "default", "via", GATEWAY)
    inside = ["nsenter", "-t", str(remote.pid), "-n"]
    sh(*inside, "ip", "link", "set", "lo", "up")
    sh(*inside, "ip", "addr", "add", f"{REMOTE_IP}/24", "dev", "v1")
    sh(*inside, "ip", "link", "set", "v1", "up")
    return remote


def outer(resolv: str, scenario: list[str]) -> dict:
    remote = setup(resolv)
    resolver = Resolver()
    work = tempfile.mkdtemp(prefix="rl-fakehost-")
    os.chown(work, USER, USER)
    try:
        inner = subprocess.Popen(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
                                  sys.executable, os.path.abspath(__file__), "--inner", work, *scenario],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = json.loads(inner.stdout.readline() or "{}")
        out = dict(first)
        if scenario[0] == "publish" and "port" in first:
            port = str(first["port"])
            client = [sys.executable, "-c", CLIENT]
            out["local"] = subprocess.run([*client, "127.0.0.2", "127.0.0.1", port], capture_output=True,
                                          text=True, timeout=60).stdout.strip()
            if not scenario[2].startswith("127."):      # a port on the host's loopback: not for the remote
                for key in ("remote", "remote_again"):  # the second one: the container's network survived
                    out[key] = subprocess.run(["nsenter", "-t", str(remote.pid), "-n", *client, REMOTE_IP,
                                               HOST_IP, port], capture_output=True, text=True,
                                              timeout=120).stdout.strip()
            if scenario[2].count(":") == 1:             # every address (HOSTPORT:80): IPv6 clients too
                out["local6"] = subprocess.run([*client, "::1", "::1", port], capture_output=True,
                                               text=True, timeout=60).stdout.strip()
        inner.stdin.write("done\n")
        inner.stdin.flush()
        out.update(json.loads(inner.stdout.readline() or "{}"))
        inner.wait(30)
        out["resolver_saw"] = resolver.seen
        return out
    finally:
        remote.kill()
        shutil.rmtree(work, ignore_errors=True)


def inner(work: str, scenario: list[str]) -> None:
    """The rootless side, as an unprivileged user of the fake host."""
    from types import SimpleNamespace

    from rootless import network
    from rootless.config import Config

    cfg = Config(data_root=os.path.join(work, "store"), runtime_dir=os.path.join(work, "run"),
                 config_dir=os.path.join(work, "cfg"))
    os.makedirs(cfg.runtime_dir, mode=0o700)
    state_dir = os.path.join(work, "ctr", "userdata")
    os.makedirs(state_dir)
    kind = scenario[0]
    if kind == "publish":
        mode, spec = scenario[1], scenario[2]
        plan = network.plan_network(SimpleNamespace(network=mode, publish=(spec,)), cfg)
        ctr = subprocess.Popen(["unshare", "-Urn", sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                               text=True)
        assert ctr.stdout.readline().strip() == "listening"
    else:
        plan = network.plan_network(SimpleNamespace(network="pasta"), cfg)
        ctr = subprocess.Popen(["unshare", "-Urn", "sleep", "600"])
        time.sleep(0.2)
    ns = ["nsenter", "-U", "-n", "--preserve-credentials", "-t", str(ctr.pid)]
    state = network.start(plan, ctr.pid, state_dir, container_id="f" * 64)
    try:
        if kind == "publish":
            print(json.dumps({"port": state["ports"][0]["host_port"], "via": state["ports"][0].get("via")}),
                  flush=True)
            sys.stdin.readline()
            rules = subprocess.run([*ns, "ip", "rule"], capture_output=True, text=True).stdout
            helper = state.get("helper_pid") or 0
            try:
                helper_alive = bool(helper) and open(f"/proc/{helper}/stat").read().rsplit(")", 1)[1].split()[0] \
                    not in ("Z", "X")
            except OSError:
                helper_alive = False
            print(json.dumps({"rules": rules, "helper_alive": helper_alive}), flush=True)
        else:
            print(json.dumps({}), flush=True)
            sys.stdin.readline()
            cp = subprocess.run([*ns, "busybox", "nslookup", "outside.test", plan.nameservers()[0]],
                                capture_output=True, text=True, timeout=60)
            print(json.dumps({"resolv": plan.etc_files("box")["/etc/resolv.conf"], "nslookup": cp.stdout}),
                  flush=True)
    finally:
        network.stop(state)
        ctr.kill()
        ctr.wait()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if sys.argv[1] == "--inner":
        inner(sys.argv[2], sys.argv[3:])
    else:
        print(json.dumps(outer(sys.argv[1], sys.argv[2:])), flush=True)
