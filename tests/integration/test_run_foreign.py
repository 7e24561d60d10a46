"""Foreign-architecture containers through `rootless run`, as the unprivileged user.

The host (x86_64 in CI) has no qemu registration in its binfmt_misc: the
sandboxed mode registers qemu-user inside each container's user namespace.
The host's /proc/sys/fs/binfmt_misc must be the same before and after.
"""

from __future__ import annotations

import json
import os

import pytest

from archsupport.binfmt import HOST_BINFMT_DIR, read_state
from archsupport.platform import host_platform

pytestmark = pytest.mark.slow


def host_binfmt():
    st = read_state()
    try:
        listing = sorted(os.listdir(HOST_BINFMT_DIR))
    except OSError as e:
        listing = [f"<{e.strerror}>"]
    return st.mounted, st.enabled, tuple((e.name, e.enabled, e.interpreter, e.flags) for e in st.entries), listing


@pytest.fixture
def host_unchanged():
    before = host_binfmt()
    yield before
    assert host_binfmt() == before, "the host's binfmt_misc changed"


@pytest.fixture(scope="module")
def foreign():
    """A foreign platform of the test images for this host (arm64 on x86_64, amd64 on arm64)."""
    return ("linux/amd64", "x86_64", "amd64") if host_platform().architecture == "arm64" \
        else ("linux/arm64", "aarch64", "arm64")


def _expected_mode(arch):
    return "host" if read_state().entry_for(arch, need_flags="F") else "sandboxed"


def test_run_platform_busybox_uname(rl, registry, foreign, host_unchanged, unprivileged):
    """Without a host registration for the architecture (CI's host): mode sandboxed, a binfmt_misc
    instance mounted in the container, and no entry for it on the host, before or after."""
    plat, machine, arch = foreign
    host_entry = read_state().any_entry_for(arch)
    cp = rl("run", "--name", "uname", "--platform", plat, registry.ref("busybox"), "sh", "-c",
            "uname -m; cat /proc/self/mountinfo")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == machine
    emu = json.loads(rl.ok("inspect", "--format", "{{json .Rootless.Emulation}}", "uname"))
    rl.ok("rm", "uname")
    assert emu["platform"].startswith(plat), emu
    if host_entry is None:
        assert emu["mode"] == "sandboxed", emu
        assert os.path.basename(emu["qemu"]) in (f"qemu-{machine}-static", f"qemu-{machine}"), emu
        assert any(" - binfmt_misc binfmt_misc " in ln for ln in lines[1:]), cp.stdout
        assert read_state().any_entry_for(arch) is None, "the host got a registration"
    else:
        assert emu["mode"] == _expected_mode(arch), emu


def test_pipelines_and_children_are_emulated(rl, registry, foreign, host_unchanged, unprivileged):
    plat, machine, _ = foreign
    script = ("echo x | cat | sed s/x/piped/; sh -c 'uname -m'; (uname -m) | tr a-z A-Z; "
              "busybox sh -c 'busybox uname -m' & wait; exec -a foo /bin/busybox 2>&1 || true")
    cp = rl("run", "--rm", "--platform", plat, registry.ref("busybox"), "sh", "-c", script)
    lines = cp.stdout.splitlines()
    assert lines[:4] == ["piped", machine, machine.upper(), machine], cp.stdout + cp.stderr
    # binfmt flag P: argv[0] reaches the program (without it busybox would print its help)
    assert lines[4:] == ["foo: applet not found"], cp.stdout


def test_debian_arm64_dpkg_and_python(rl, registry, images, host_unchanged, unprivileged):
    if not images.has("debian"):
        pytest.skip("no debian test image (NO_DEBIAN=1)")
    if host_platform().architecture == "arm64":
        pytest.skip("the arm64 image is native here")
    cp = rl("run", "--rm", "--platform", "linux/arm64", registry.ref("debian", "bookworm"), "sh", "-c",
            "dpkg --print-architecture; python3 -c 'import platform; print(platform.machine())'", timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["arm64", "aarch64"]


def test_inspect_shows_emulation_mode(rl, registry, foreign, unprivileged):
    plat, _, arch = foreign
    name = "emu-inspect"
    rl.ok("create", "--name", name, "--platform", plat, registry.ref("busybox"), "true")
    d = json.loads(rl.ok("inspect", name))[0]
    emu = d["Rootless"]["Emulation"]
    assert emu["mode"] == _expected_mode(arch) and emu["platform"].startswith(plat)
    assert json.loads(rl.ok("inspect", "--format", "{{json .Rootless.Emulation}}", name))["mode"] == emu["mode"]
    rl.ok("rm", name)


def test_arch_and_variant_flags(rl, registry, foreign, unprivileged):
    plat, machine, arch = foreign
    out = rl.ok("run", "--rm", "--arch", arch, registry.ref("busybox"), "uname", "-m")
    assert out.strip() == machine
    cp = rl("pull", "--arch", arch, "--variant", "v8" if arch == "arm64" else "", registry.ref("busybox"))
    assert cp.returncode == 0, cp.stderr


def test_unknown_platform_lists_known_values(rl, registry, unprivileged):
    for cmd in (("run", "--rm"), ("create",), ("pull",)):
        cp = rl(*cmd, "--platform", "linux/sparc", registry.ref("busybox"), *(["true"] if cmd[0] != "pull" else []))
        assert cp.returncode == 125, (cmd, cp.stderr)
        assert "linux/sparc" in cp.stderr and "linux/arm64" in cp.stderr and "linux/amd64" in cp.stderr
    cp = rl("run", "--rm", "--arch", "sparc", registry.ref("busybox"), "true")
    assert cp.returncode == 125 and "linux/arm64" in cp.stderr


def test_index_without_the_platform_lists_what_it_has(rl, registry, unprivileged):
    cp = rl("run", "--rm", "--platform", "linux/riscv64", registry.ref("busybox"), "true")
    assert cp.returncode == 125
    assert "linux/riscv64" in cp.stderr and "linux/amd64" in cp.stderr and "linux/arm64" in cp.stderr


def test_platform_mismatch_of_single_platform_image_warns(rl, registry, foreign, unprivileged):
    """`layered` is an amd64-only image (no index): asking for another platform warns and uses it."""
    plat, _, _ = foreign
    if host_platform().architecture != "amd64":
        pytest.skip("layered is amd64")
    cp = rl("pull", "--platform", "linux/arm64", registry.ref("layered"))
    assert cp.returncode == 0, cp.stderr
    assert "WARNING" in cp.stderr and "linux/amd64" in cp.stderr and "linux/arm64" in cp.stderr


def test_mode_none_exits_125_with_reason_and_fix(rl, registry, foreign, unprivileged):
    plat, _, _ = foreign
    cfg = rl.home / ".config" / "rootless"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[emulation]\nmode = "none"\n')
    cp = rl("run", "--rm", "--platform", plat, registry.ref("busybox"), "uname", "-m")
    assert cp.returncode == 125
    assert f"cannot run {plat}" in cp.stderr and "emulation is disabled" in cp.stderr
    assert "Hint:" in cp.stderr and 'mode = "auto"' in cp.stderr


def test_missing_qemu_exits_125_naming_the_package(rl, registry, foreign, unprivileged):
    plat, _, arch = foreign
    cfg = rl.home / ".config" / "rootless"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text(f'[emulation]\nmode = "sandboxed"\n[emulation.qemu]\n{arch} = "/nonexistent"\n')
    cp = rl("run", "--rm", "--platform", plat, registry.ref("busybox"), "uname", "-m")
    assert cp.returncode == 125
    assert "/nonexistent" in cp.stderr and "qemu-user-static" in cp.stderr


def test_exec_format_error_names_the_binarys_architecture(rl, registry, foreign, tmp_path, unprivileged):
    """A program of a third architecture in an emulated container: 126 with what it is and the fix."""
    from archsupport.probe import probe_elf

    plat, _, _ = foreign
    prog = tmp_path / "prog"
    prog.write_bytes(probe_elf("s390x"))
    prog.chmod(0o755)
    cp = rl("run", "--rm", "--platform", plat, "-v", f"{prog}:/prog:ro", registry.ref("busybox"), "/prog")
    assert cp.returncode == 126, cp.stderr
    assert "exec /prog: exec format error: /prog is s390x (ELF 64-bit MSB IBM S/390 (s390x))" in cp.stderr
    assert f"but the image says {plat}" in cp.stderr and "--platform linux/s390x" in cp.stderr


# --- the entrypoint's architecture, --rootfs with --platform, warnings, inspect ------------------

@pytest.fixture(scope="module")
def foreign_rootfs(images, foreign, tmp_path_factory):
    """The busybox of the foreign platform, as a plain directory (for --rootfs)."""
    from tests.rootfs_util import extract_rootfs

    return str(extract_rootfs(images.layout("busybox"), foreign[0], tmp_path_factory.mktemp("foreign") / "rootfs"))


@pytest.fixture(scope="module")
def mislabelled(images, registry, foreign, tmp_path_factory):
    """An image whose configuration says the host's platform but whose programs are the foreign busybox."""
    import gzip

    from tests.imgtools import Layout

    layout = images.layout("busybox")
    blob = lambda d: layout / "blobs" / "sha256" / d.split(":", 1)[1]  # noqa: E731
    manifest = json.loads(blob(images.info("busybox")["manifests"][foreign[0]]).read_bytes())
    layers = [gzip.decompress(blob(d["digest"]).read_bytes()) for d in manifest["layers"]]
    out = Layout(tmp_path_factory.mktemp("mislabelled") / "layout")
    out.image("latest", layers, arch=host_platform().architecture, config={"Cmd": ["uname", "-m"]})
    registry.push_layout(out.path, "latest", "mislabelled")
    return registry.ref("mislabelled")


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("WARNING")]


def test_rootfs_of_another_architecture_runs_emulated_with_a_warning(rl, foreign, foreign_rootfs, host_unchanged,
                                                                     unprivileged):
    """--rootfs without --platform: the entrypoint's ELF header tells; emulation runs it, with a warning."""
    plat, machine, arch = foreign
    cp = rl("run", "--rm", "--network", "none", "--rootfs", foreign_rootfs, "/bin/busybox", "uname", "-m")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == machine
    assert _warnings(cp.stderr) == [
        f"WARNING: /bin/busybox is {arch} (ELF 64-bit LSB {'AArch64' if arch == 'arm64' else 'x86-64'} ({arch})), "
        f"not {host_platform().architecture} like this host: running it emulated ({_expected_mode(arch)}); "
        f"say so with --platform {plat}"], cp.stderr


def test_rootfs_with_platform(rl, foreign, foreign_rootfs, host_unchanged, unprivileged):
    """--platform with --rootfs is validated and chooses the emulation (no warning then)."""
    plat, machine, _ = foreign
    cp = rl("run", "--rm", "--network", "none", "--platform", plat, "--rootfs", foreign_rootfs, "uname", "-m")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == machine and _warnings(cp.stderr) == []
    for cmd in (("run", "--rm"), ("create",)):
        cp = rl(*cmd, "--network", "none", "--platform", "linux/sparc", "--rootfs", foreign_rootfs, "/bin/true")
        assert cp.returncode == 125, cp.stderr
        assert "unknown platform 'linux/sparc'" in cp.stderr and "linux/arm64" in cp.stderr
    assert rl.ok("ps", "-aq").strip() == ""


def test_mislabelled_image_runs_emulated_with_a_warning(rl, mislabelled, foreign, host_unchanged, unprivileged):
    plat, machine, arch = foreign
    host = host_platform()
    cp = rl("run", "--name", "mis", mislabelled)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == machine
    w = _warnings(cp.stderr)
    assert len(w) == 1 and w[0].startswith(f"WARNING: the image says {host}, but its uname is {arch} "), cp.stderr
    assert "(mislabelled image)" in w[0] and f"--platform {plat}" in w[0]
    # inspect shows the emulation the start really used
    emu = json.loads(rl.ok("inspect", "--format", "{{json .Rootless.Emulation}}", "mis"))
    assert emu["mode"] == _expected_mode(arch) and emu["platform"].startswith(plat), emu
    rl.ok("rm", "mis")


def test_mislabelled_image_without_emulation_is_126_explained(rl, mislabelled, foreign, unprivileged):
    plat, _, arch = foreign
    cfg = rl.home / ".config" / "rootless"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[emulation]\nmode = "none"\n')
    cp = rl("run", "--rm", mislabelled)
    assert cp.returncode == 126, cp.stderr
    assert (f"exec uname: exec format error: uname is {arch} (ELF 64-bit LSB" in cp.stderr
            and f"but the image says {host_platform()} (mislabelled image)" in cp.stderr), cp.stderr
    assert f"Hint: run it as what it is: --platform {plat}" in cp.stderr and "emulation is disabled" in cp.stderr


def test_exec_format_error_of_a_native_image_is_explained(rl, registry, foreign, tmp_path, unprivileged):
    """A foreign program the start did not see (a bind mount): exec fails, 126 says what the program is."""
    from archsupport.probe import probe_elf

    plat, _, arch = foreign
    prog = tmp_path / "prog"
    prog.write_bytes(probe_elf(arch))
    prog.chmod(0o755)
    cp = rl("run", "--rm", "-v", f"{prog}:/prog:ro", registry.ref("busybox"), "/prog")
    assert cp.returncode == 126, cp.stderr
    assert f"exec /prog: exec format error: /prog is {arch} (ELF 64-bit LSB" in cp.stderr
    assert f"but the image says {host_platform()} (mislabelled image)" in cp.stderr
    assert f"--platform {plat}" in cp.stderr


def test_platform_mismatch_warns_once_on_run_and_create(rl, registry, foreign, unprivileged):
    """A single-platform image that is not the platform asked for: one warning (the pull's), not two."""
    if host_platform().architecture != "amd64":
        pytest.skip("layered is amd64")
    for cmd in (("run", "--rm"), ("create",)):
        cp = rl(*cmd, "--platform", "linux/arm64", registry.ref("layered"), "true")
        assert cp.returncode == 0, cp.stderr
        assert _warnings(cp.stderr) == [
            "WARNING: image platform (linux/amd64) does not match the expected platform (linux/arm64)"], cp.stderr


def test_foreign_tag_without_platform_warns_like_docker(rl, registry, foreign, host_unchanged, unprivileged):
    """A tag of a single foreign manifest, no --platform: it runs emulated, with Docker's warning, once."""
    plat, machine, arch = foreign
    want = (f"WARNING: The requested image's platform ({plat}) does not match the detected host platform "
            f"({host_platform()}) and no specific platform was requested")
    ref = registry.ref("busybox", arch)
    for cmd in (("run", "--rm"), ("run", "--rm"), ("create",)):      # pulled, then present
        cp = rl(*cmd, ref, "uname", "-m")
        assert cp.returncode == 0, cp.stderr
        assert _warnings(cp.stderr) == [want], cp.stderr
        if cmd[0] == "run":
            assert cp.stdout.strip() == machine


def test_inspect_shows_the_emulation_chosen_at_create(rl, registry, foreign, unprivileged):
    """Changing [emulation] mode after create does not change what inspect says the container has."""
    plat, _, arch = foreign
    rl.ok("create", "--name", "emu-rec", "--platform", plat, registry.ref("busybox"), "true")
    before = json.loads(rl.ok("inspect", "--format", "{{json .Rootless.Emulation}}", "emu-rec"))
    assert before["mode"] == _expected_mode(arch)
    cfg = rl.home / ".config" / "rootless"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[emulation]\nmode = "none"\n')
    after = json.loads(rl.ok("inspect", "--format", "{{json .Rootless.Emulation}}", "emu-rec"))
    assert after == before
    rl.ok("rm", "emu-rec")
