"""doctor and info show the emulation mode `run` would use, per architecture (as the unprivileged user)."""

import json

from archsupport.binfmt import read_state


def _expected_arm64_mode():
    return "host" if read_state().entry_for("arm64", need_flags="F") else "sandboxed"


def test_info_shows_mode_per_arch(rl, unprivileged):
    d = json.loads(rl.ok("info", "--format", "json"))
    emu = d["emulation"]
    assert emu["amd64"]["mode"] == "native" and emu["386"]["mode"] == "native"
    assert emu["arm64"]["mode"] == _expected_arm64_mode()
    if emu["arm64"]["mode"] == "sandboxed":
        assert emu["arm64"]["interpreter"] == "/usr/bin/qemu-aarch64-static"
        assert emu["arm64"]["flags"] == "FP"          # qemu 7.2 on Linux >= 5.12
    assert set(emu) >= {"arm64", "arm", "riscv64", "ppc64le", "s390x", "mips64le"}
    text = rl.ok("info")
    assert "emulation:" in text and "arm64:" in text


def test_doctor_shows_mode_per_arch_and_in_binfmt_line(rl, unprivileged):
    out = rl.ok("doctor")
    line = next(l for l in out.splitlines() if l.split()[1:2] == ["qemu-arm64"])
    assert line.startswith("OK") and f"mode {_expected_arm64_mode()}" in line
    binfmt = next(l for l in out.splitlines() if l.split()[1:2] == ["binfmt_misc"])
    assert "foreign images use" in binfmt and "arm64" in binfmt


def test_mode_none_from_config_is_shown_with_the_fix(rl, unprivileged):
    cfg = rl.home / ".config" / "rootless"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[emulation]\nmode = "none"\n')
    d = json.loads(rl.ok("info", "--format", "json"))
    assert d["emulation"]["arm64"]["mode"] == "none" and d["emulation"]["amd64"]["mode"] == "native"
    assert "mode = \"auto\"" in d["emulation"]["arm64"]["fix"]
    cp = rl("doctor")
    assert cp.returncode == 0                          # emulation is optional for `run`
    line = next(l for l in cp.stdout.splitlines() if l.split()[1:2] == ["qemu-arm64"])
    assert line.startswith("WARN") and "cannot run" in line and "fix:" in line


def test_configured_qemu_path_that_does_not_exist(rl, unprivileged):
    cfg = rl.home / ".config" / "rootless"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[emulation]\nmode = "sandboxed"\n[emulation.qemu]\nriscv64 = "/nonexistent/qemu"\n')
    d = json.loads(rl.ok("info", "--format", "json"))
    r = d["emulation"]["riscv64"]
    assert r["mode"] == "none" and "/nonexistent/qemu" in r["reason"] and "qemu-user-static" in r["fix"]
    assert d["emulation"]["arm64"]["mode"] == "sandboxed"
