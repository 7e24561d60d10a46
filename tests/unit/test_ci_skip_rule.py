"""tests/conftest.py's CI rule: under ROOTLESS_CI_NO_SKIP=1 no integration test may skip,
whether it skips while running or its module skips while being collected.

pytest runs in a subprocess on a made-up tree (integration/ and unit/) with this
project's conftest loaded as a plugin."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULE_SKIP = """
import pytest
pytest.skip("no frobnicator (module)", allow_module_level=True)

def test_never_runs():
    pass
"""

RUNTIME_SKIP = """
import pytest

def test_skips():
    pytest.skip("no frobnicator (runtime)")

def test_passes():
    pass
"""


@pytest.fixture
def tree(tmp_path) -> Path:
    t = tmp_path / "tree"
    for d, name, src in (("integration", "test_mod.py", MODULE_SKIP), ("integration", "test_rt.py", RUNTIME_SKIP),
                         ("unit", "test_unit_mod.py", MODULE_SKIP.replace("(module)", "(unit)"))):
        (t / d).mkdir(parents=True, exist_ok=True)
        (t / d / name).write_text(src)
    return t


def _pytest(tree: Path, no_skip: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ROOTLESS_CI_NO_SKIP"}
    env["PYTHONPATH"] = str(ROOT)
    if no_skip:
        env["ROOTLESS_CI_NO_SKIP"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(tree), "-c", os.devnull, "-rA", "--continue-on-collection-errors", str(tree)],
                          capture_output=True, text=True, cwd=tree, env=env, timeout=120)


def test_integration_skips_fail_the_run_under_no_skip(tree):
    cp = _pytest(tree, no_skip=True)
    out = cp.stdout
    assert cp.returncode not in (0, 5), out
    # the module that skipped while collected: a collection error, with its reason
    assert "ERROR integration/test_mod.py" in out and "no frobnicator (module)" in out
    assert "skipped while collected in CI (ROOTLESS_CI_NO_SKIP=1)" in out
    # the test that skipped while running: a failure
    assert "FAILED integration/test_rt.py::test_skips" in out and "no frobnicator (runtime)" in out
    # unit tests may skip
    assert "SKIPPED [1] unit/test_unit_mod.py" in out


def test_skips_are_skips_without_it(tree):
    cp = _pytest(tree, no_skip=False)
    assert cp.returncode == 0, cp.stdout
    last = cp.stdout.splitlines()[-1]
    assert "1 passed" in last and "3 skipped" in last, last
