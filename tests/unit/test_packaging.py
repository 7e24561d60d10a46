"""What `pip install` puts in place: the three packages, vmhost's guest scripts, the console
script. Built offline from a copy of this checkout with setuptools' own commands (egg_info
for the metadata, build_py for the files a wheel holds), then run from there."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rootless", "archsupport", "vmhost")


def _sources(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for pkg in PACKAGES for p in (base / pkg).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    t = tmp_path_factory.mktemp("pkg")
    src = t / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (t / "egg").mkdir()
    cp = subprocess.run([sys.executable, "-W", "ignore", "-c", "import setuptools; setuptools.setup()", "-q",
                         "egg_info", "--egg-base", str(t / "egg"), "build_py", "--build-lib", str(t / "lib")],
                        cwd=src, capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return t


def test_every_file_of_the_three_packages_is_installed(built):
    lib = built / "lib"
    assert sorted(p.name for p in lib.iterdir()) == sorted(PACKAGES)
    assert _sources(lib) == _sources(ROOT)            # modules and package data (vmhost/guest/*)
    for name in ("init", "boot", "build-hook", "cloud-boot", "sshd_config"):
        assert (lib / "vmhost" / "guest" / name).read_bytes() == (ROOT / "vmhost" / "guest" / name).read_bytes()
    # regular packages: an installer that does not discover namespace packages still finds them
    for pkg in PACKAGES:
        assert (lib / pkg / "__init__.py").is_file(), pkg


def test_metadata_console_script_and_python_requirement(built):
    info = built / "egg" / "rootless.egg-info"
    assert (info / "entry_points.txt").read_text().split() == ["[console_scripts]", "rootless", "=",
                                                               "rootless.cli.main:main"]
    assert sorted((info / "top_level.txt").read_text().split()) == sorted(PACKAGES)
    assert "Requires-Python: >=3.11" in (info / "PKG-INFO").read_text()


def test_the_built_tree_runs(built, tmp_path):
    from rootless import __version__

    env = dict(os.environ, PYTHONPATH=str(built / "lib"), PYTHONDONTWRITEBYTECODE="1")
    # what the console script does (rootless.cli.main:main), and python -m rootless
    for argv in ([sys.executable, "-c", "import sys; from rootless.cli.main import main; sys.exit(main())",
                  "--version"], [sys.executable, "-m", "rootless", "--version"]):
        cp = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert (cp.returncode, cp.stdout) == (0, f"rootless version {__version__}\n"), cp.stderr
    cp = subprocess.run([sys.executable, "-c", "import archsupport, rootless, vmhost.seed as s; "
                         "print(rootless.__file__); print((s.GUEST_DIR / 'init').is_file())"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert cp.stdout.split() == [str(built / "lib" / "rootless" / "__init__.py"), "True"], cp.stderr
