"""`rootless network`: create, ls, inspect, rm, prune, connect, disconnect."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from rootless.cli.base import Command
from rootless.errors import UsageError

COMMANDS: dict[str, Command] = {}

BUILTIN_DRIVERS = {"bridge": None, "host": "host", "none": "null"}


def _builtin_id(name: str) -> str:
    return hashlib.sha256(f"rootless-builtin-network-{name}".encode()).hexdigest()


def _default_driver(config) -> str:
    from rootless.network import backend_name

    return backend_name(config) or "pasta"


def _labels(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        k, _, val = v.partition("=")
        if not k:
            raise UsageError(f"invalid label {v!r}", hint="use --label KEY=VALUE")
        out[k] = val
    return out


def _store(ctx):
    from rootless.network.networks import NetworkStore

    return NetworkStore(ctx.config.data_root)


def _users(ctx) -> dict[str, list[str]]:
    from rootless.network.networks import containers_using

    return containers_using(ctx.config.data_root)


# ---------------------------------------------------------------------------
# create

def _create_setup(p):
    p.add_argument("name", metavar="NETWORK")
    p.add_argument("-d", "--driver", default="bridge", help="network driver (only bridge)")
    p.add_argument("--subnet", help="subnet in CIDR notation (default: a free /24 of 10.89.0.0/16)")
    p.add_argument("--gateway", help="gateway address (default: the first address of the subnet)")
    p.add_argument("--internal", action="store_true", help="no access to or from the outside")
    p.add_argument("--label", action="append", help="set a label KEY=VALUE")
    p.add_argument("--disable-dns", action="store_true", help="no DNS server for container names")
    p.add_argument("--ipv6", action="store_true", help=argparse.SUPPRESS)


def cmd_create(ctx, args) -> int:
    if args.driver not in ("bridge",):
        raise UsageError(f"network driver {args.driver!r} is not supported", hint="use -d bridge (the default)")
    if args.ipv6:
        raise UsageError("IPv6 networks are not supported yet", hint="leave out --ipv6")
    n = _store(ctx).create(args.name, subnet=args.subnet, gateway=args.gateway, internal=args.internal,
                           labels=_labels(args.label), dns=not args.disable_dns)
    print(n.id, file=ctx.out)
    return 0


COMMANDS["create"] = Command("Create a network", _create_setup, cmd_create)


# ---------------------------------------------------------------------------
# ls

def _ls_setup(p):
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.add_argument("-f", "--filter", action="append", default=[], help="filter: name=, id=, driver=, label=, type=")
    p.add_argument("--format", help="'table', 'json' or a Go template")


def _listing(ctx) -> list[dict]:
    items = []
    drv = _default_driver(ctx.config)
    for name, d in BUILTIN_DRIVERS.items():
        items.append({"ID": _builtin_id(name), "Name": name, "Driver": d or drv, "Scope": "local",
                      "Internal": False, "Labels": {}, "Created": "", "Subnet": "", "Gateway": "", "type": "builtin"})
    for n in _store(ctx).list():
        items.append({"ID": n.id, "Name": n.name, "Driver": n.driver, "Scope": "local", "Internal": n.internal,
                      "Labels": dict(n.labels), "Created": n.created, "Subnet": n.subnet, "Gateway": n.gateway,
                      "type": "custom"})
    return items


def _match(item: dict, filters: list[str]) -> bool:
    by: dict[str, list[str]] = {}
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep:
            raise UsageError(f"bad filter {f!r}", hint="use KEY=VALUE (name, id, driver, label, type)")
        if k not in ("name", "id", "driver", "label", "type"):
            raise UsageError(f"invalid filter {k!r}", hint="network ls filters: name, id, driver, label, type")
        by.setdefault(k, []).append(v)
    for k, vs in by.items():
        if k == "name" and not any(v in item["Name"] for v in vs):
            return False
        if k == "id" and not any(item["ID"].startswith(v) for v in vs):
            return False
        if k == "driver" and item["Driver"] not in vs:
            return False
        if k == "type" and item["type"] not in vs:
            return False
        if k == "label":
            for v in vs:
                lk, s, lv = v.partition("=")
                if lk not in item["Labels"] or (s and item["Labels"][lk] != lv):
                    return False
    return True


def cmd_ls(ctx, args) -> int:
    from rootless.cli.format import output

    items = [i for i in _listing(ctx) if _match(i, args.filter)]
    short = (lambda s: s) if args.no_trunc else (lambda s: s[:12])
    shown = [dict(i, ID=short(i["ID"])) for i in items]
    if args.format == "json":
        for i in shown:  # one object per line, as docker ps/images/volume ls --format json
            print(json.dumps({k: v for k, v in i.items() if k != "type"}), file=ctx.out)
        return 0
    text = output(shown, args.format, ["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                  lambda i: [i["ID"], i["Name"], i["Driver"], i["Scope"]], quiet_field="ID", quiet=args.quiet,
                  headers={"ID": "NETWORK ID"})
    if text:
        print(text, file=ctx.out)
    return 0


COMMANDS["ls"] = Command("List networks", _ls_setup, cmd_ls)


# ---------------------------------------------------------------------------
# inspect

def _inspect_setup(p):
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.add_argument("-f", "--format", help="Go template")


def inspect_object(ctx, ref: str, eps: dict | None = None) -> dict:
    from rootless.network import rootlessns

    if ref in BUILTIN_DRIVERS:
        return {"Name": ref, "Id": _builtin_id(ref), "Created": "", "Scope": "local",
                "Driver": BUILTIN_DRIVERS[ref] or _default_driver(ctx.config), "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": {}, "Config": []}, "Internal": False, "Attachable": False,
                "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
                "Options": {}, "Labels": {}}
    n = _store(ctx).get(ref)
    if eps is None:
        eps = rootlessns.endpoints(ctx.config.runtime_dir)
    containers = {}
    for cid, e in (eps.get(n.id) or {}).items():
        containers[cid] = {"Name": e["name"], "EndpointID": e.get("endpoint_id", ""), "MacAddress": e.get("mac", ""),
                           "IPv4Address": f"{e['ip']}/{e['prefixlen']}", "IPv6Address": ""}
    return {"Name": n.name, "Id": n.id, "Created": n.created, "Scope": "local", "Driver": n.driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
            "Internal": n.internal, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
            "ConfigOnly": False, "Containers": containers,
            "Options": {"com.docker.network.bridge.name": n.bridge, "rootless.dns": "true" if n.dns else "false"},
            "Labels": dict(n.labels)}


def cmd_inspect(ctx, args) -> int:
    from rootless.errors import RootlessError
    from rootless.network import rootlessns

    eps = rootlessns.endpoints(ctx.config.runtime_dir)
    out, failed = [], None
    for ref in args.names:
        try:
            out.append(inspect_object(ctx, ref, eps))
        except RootlessError as e:
            failed = e
            print(f"Error: {e.message}", file=ctx.err)
    if args.format:
        from rootless.cli.format import render

        for o in out:
            print(render(args.format, o), file=ctx.out)
    else:
        print(json.dumps(out, indent=4), file=ctx.out)
    return failed.exit_code if failed else 0


COMMANDS["inspect"] = Command("Display detailed information on one or more networks", _inspect_setup, cmd_inspect)


# ---------------------------------------------------------------------------
# rm

def _rm_setup(p):
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.add_argument("-f", "--force", action="store_true", help="do not error if the network does not exist")


def cmd_rm(ctx, args) -> int:
    from rootless.errors import RootlessError
    from rootless.network.networks import NetworkNotFound

    store = _store(ctx)
    users = _users(ctx)
    status = 0
    for ref in args.names:
        try:
            if ref in BUILTIN_DRIVERS or ref in ("pasta", "slirp4netns"):
                raise UsageError(f"{ref} is a pre-defined network and cannot be removed")
            n = store.get(ref)
            store.remove(n.name, users.get(n.name, []))
            print(ref, file=ctx.out)
        except NetworkNotFound as e:
            if args.force:
                continue
            print(f"Error: {e.message}", file=ctx.err)
            status = e.exit_code
        except RootlessError as e:
            print(f"Error: {e.message}", file=ctx.err)
            if e.hint:
                print(f"Hint: {e.hint}", file=ctx.err)
            status = e.exit_code
    return status


COMMANDS["rm"] = Command("Remove one or more networks", _rm_setup, cmd_rm)


# ---------------------------------------------------------------------------
# prune

def _prune_setup(p):
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE]")


def cmd_prune(ctx, args) -> int:
    if not args.force:
        print("WARNING! This will remove all custom networks not used by at least one container.\n"
              "Are you sure you want to continue? [y/N] ", end="", file=ctx.out, flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    deleted = prune_unused(ctx, args.filter)
    if deleted:
        print("Deleted Networks:\n" + "\n".join(deleted), file=ctx.out)
    return 0


def prune_unused(ctx, filters: list[str] = ()) -> list[str]:
    """Remove the custom networks no container uses (matching ``filters``); their names."""
    from rootless.errors import RootlessError

    store = _store(ctx)
    users = _users(ctx)
    deleted = []
    for item in _listing(ctx):
        if item["type"] != "custom" or users.get(item["Name"]) or not _match(item, list(filters)):
            continue
        try:
            store.remove(item["Name"], [])
            deleted.append(item["Name"])
        except RootlessError as e:
            ctx.warn(e.message)
    return deleted


COMMANDS["prune"] = Command("Remove all unused networks", _prune_setup, cmd_prune)


# ---------------------------------------------------------------------------
# connect / disconnect

def _connect_setup(p):
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("--alias", action="append", default=[], help="another DNS name on this network")
    p.add_argument("--ip", default="", help="the container's IPv4 address on this network")


def _live_state(ctr):
    from rootless.runtime.state import alive

    st = ctr.state
    return st if st.running and alive(st.pid, st.pid_start) else None


def cmd_connect(ctx, args) -> int:
    from rootless.errors import NetworkError
    from rootless.network import effective_mode, read_overrides, write_overrides
    from rootless.network import rootlessns
    from rootless.runtime.state import ContainerStore

    config = ctx.config
    if args.network in BUILTIN_DRIVERS or args.network in ("pasta", "slirp4netns"):
        raise UsageError(f"cannot connect to the pre-defined network {args.network}",
                         hint="connect to a user-defined network (rootless network create NAME)")
    net = _store(ctx).get(args.network)
    if args.ip:
        net.check_ip(args.ip)
    store = ContainerStore(config)
    ctr = store.lookup(args.container)
    with store.ctr_lock(ctr.id):
        ov = read_overrides(ctr.dir)
        current, _ = effective_mode(ctr.spec.network, ov)
        if net.name in [m.strip() for m in current.split(",")]:
            raise NetworkError(f"container {ctr.name} is already connected to network {net.name}")
        st = _live_state(ctr)
        new_state = None
        if st is not None:
            handle = dict(st.network or {})
            if handle.get("mode") != "bridge":
                raise NetworkError(f"container {ctr.name} runs on the {handle.get('mode') or current} network: "
                                   "it can join a user-defined network only when started on one",
                                   hint=f"stop it, connect it (rootless network connect {net.name} {ctr.name}), "
                                        "and start it again")
            eps = list(handle.get("networks") or [])
            used = {e.get("ifname") for e in eps}
            ifname = next(f"eth{i}" for i in range(len(eps) + 1) if f"eth{i}" not in used)
            ep = rootlessns.attach(config, container_id=ctr.id, pid=st.pid, name=ctr.name, network=net,
                                   ip=args.ip or None, aliases=args.alias, ifname=ifname)
            eps.append({"name": net.name, "id": net.id, **ep})
            new_state = dict(handle, networks=eps)
        conn = dict(ov.get("connect") or {})
        conn[net.name] = {"aliases": list(args.alias), "ip": args.ip}
        ov = dict(ov, connect=conn, disconnect=[n for n in ov.get("disconnect") or [] if n != net.name])
        write_overrides(ctr.dir, ov)
    if new_state is not None:
        store.update_state(ctr.id, network=new_state)
    return 0


COMMANDS["connect"] = Command("Connect a container to a network", _connect_setup, cmd_connect)


def _disconnect_setup(p):
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("-f", "--force", action="store_true", help="(accepted for compatibility)")


def cmd_disconnect(ctx, args) -> int:
    from rootless.errors import NetworkError
    from rootless.network import effective_mode, read_overrides, write_overrides
    from rootless.network import rootlessns
    from rootless.runtime.state import ContainerStore

    config = ctx.config
    net = _store(ctx).get(args.network)
    store = ContainerStore(config)
    ctr = store.lookup(args.container)
    with store.ctr_lock(ctr.id):
        ov = read_overrides(ctr.dir)
        current, _ = effective_mode(ctr.spec.network, ov)
        if net.name not in [m.strip() for m in current.split(",")]:
            raise NetworkError(f"container {ctr.name} is not connected to network {net.name}")
        st = _live_state(ctr)
        new_state = None
        if st is not None and (st.network or {}).get("mode") == "bridge":
            rootlessns.detach(config, ctr.id, net.id)
            handle = dict(st.network)
            new_state = dict(handle, networks=[e for e in handle.get("networks") or [] if e.get("id") != net.id])
        conn = {k: v for k, v in (ov.get("connect") or {}).items() if k != net.name}
        gone = list(dict.fromkeys([*(ov.get("disconnect") or []), net.name]))
        write_overrides(ctr.dir, dict(ov, connect=conn, disconnect=gone))
    if new_state is not None:
        store.update_state(ctr.id, network=new_state)
    return 0


COMMANDS["disconnect"] = Command("Disconnect a container from a network", _disconnect_setup, cmd_disconnect)
