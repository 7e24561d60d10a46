"""`rootless info`: host, kernel, store, storage driver, network, emulation."""

from __future__ import annotations

import os

from rootless.config import Config


def host_info(config: Config) -> dict:
    from archsupport.platform import host_platform, native_platforms
    from rootless import __version__
    from rootless.userns import default_mapping

    u = os.uname()
    mapping = default_mapping()
    plat = host_platform()
    info: dict = {
        "version": __version__,
        "host": {
            "hostname": u.nodename,
            "os": "linux",
            "kernel": u.release,
            "arch": u.machine,
            "platform": str(plat),
            "native_platforms": [str(p) for p in native_platforms(plat)],
            "uid": os.getuid(),
            "cpus": os.cpu_count(),
        },
        "store": {
            "root": str(config.data_root),
            "runtime_dir": str(config.runtime_dir),
            "config_dir": str(config.config_dir),
            "config_files": [str(p) for p in config.config_files],
            "storage_driver": _storage_driver(config),
        },
        "idmap": {
            "uids": [m.line() for m in mapping.uids],
            "gids": [m.line() for m in mapping.gids],
        },
        "network": {"backend": _network_backend(config)},
        "emulation": _emulation(config),
    }
    return info


def _storage_driver(config: Config) -> str:
    try:
        from rootless.storage import select_driver_name
    except ImportError:
        return config.storage_driver
    return select_driver_name(config)


def _network_backend(config: Config) -> str:
    from rootless.network import backend_name

    return backend_name(config) or "none (install passt)"


def _emulation(config: Config) -> dict:
    try:
        from archsupport.emulation import emulation_table
    except ImportError:
        from archsupport.platform import KNOWN_ARCHES, host_platform, native_platforms
        from archsupport.qemu import find_qemu

        native = {p.architecture for p in native_platforms(host_platform())}
        return {a: ("native" if a in native else ("qemu-user available" if find_qemu(a) else "none"))
                for a in KNOWN_ARCHES}
    return emulation_table(config)
