"""The image run configuration as the builder changes it (Docker's ``config``).

A frozen dataclass with the fields of the OCI/Docker image config's
``config`` object; ``from_json``/``to_json`` convert at the edges (image
config JSON in, image config JSON out).  Updates return new objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rootless.build.instructions import HealthConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class RunConfig:
    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    healthcheck: HealthConfig | None = None
    shell: tuple[str, ...] = ()
    onbuild: tuple[str, ...] = ()
    args_escaped: bool = False

    def replace(self, **kw) -> "RunConfig":
        return dataclasses.replace(self, **kw)

    # -- env helpers
    def env_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in self.env:
            k, _, v = e.partition("=")
            out[k] = v
        return out

    def with_env(self, key: str, value: str) -> "RunConfig":
        env = list(self.env)
        for i, e in enumerate(env):
            if e.partition("=")[0] == key:
                env[i] = f"{key}={value}"
                break
        else:
            env.append(f"{key}={value}")
        return self.replace(env=tuple(env))

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def with_labels(self, pairs) -> "RunConfig":
        d = dict(self.labels)
        for k, v in pairs:
            d[k] = v
        return self.replace(labels=tuple(d.items()))

    # -- JSON
    @classmethod
    def from_json(cls, d: dict | None) -> "RunConfig":
        d = d or {}
        hc = d.get("Healthcheck")
        health = None
        if isinstance(hc, dict) and hc.get("Test"):
            health = HealthConfig(test=tuple(hc.get("Test") or ()), interval=int(hc.get("Interval") or 0),
                                  timeout=int(hc.get("Timeout") or 0), start_period=int(hc.get("StartPeriod") or 0),
                                  start_interval=int(hc.get("StartInterval") or 0),
                                  retries=int(hc.get("Retries") or 0))

        def strs(key):
            v = d.get(key)
            return tuple(v) if isinstance(v, list) else None

        return cls(env=tuple(d.get("Env") or ()), cmd=strs("Cmd"), entrypoint=strs("Entrypoint"),
                   working_dir=d.get("WorkingDir") or "", user=d.get("User") or "",
                   labels=tuple((d.get("Labels") or {}).items()),
                   exposed_ports=tuple((d.get("ExposedPorts") or {}).keys()),
                   volumes=tuple((d.get("Volumes") or {}).keys()), stop_signal=d.get("StopSignal") or "",
                   healthcheck=health, shell=tuple(d.get("Shell") or ()), onbuild=tuple(d.get("OnBuild") or ()),
                   args_escaped=bool(d.get("ArgsEscaped")))

    def to_json(self) -> dict:
        out: dict = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in sorted(self.exposed_ports)}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in sorted(self.volumes)}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(sorted(self.labels))
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            h = self.healthcheck
            hj: dict = {"Test": list(h.test)}
            for k, v in (("Interval", h.interval), ("Timeout", h.timeout), ("StartPeriod", h.start_period),
                         ("StartInterval", h.start_interval), ("Retries", h.retries)):
                if v:
                    hj[k] = v
            out["Healthcheck"] = hj
        if self.shell:
            out["Shell"] = list(self.shell)
        if self.onbuild:
            out["OnBuild"] = list(self.onbuild)
        if self.args_escaped:
            out["ArgsEscaped"] = True
        return out
