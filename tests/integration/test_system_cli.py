"""`rootless system df` and `rootless system prune` as the unprivileged user."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.usefixtures("unprivileged")

_UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def _bytes(text: str) -> float:
    m = re.match(r"([\d.]+)(B|kB|MB|GB|TB)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def _df(rl) -> dict[str, dict]:
    rows = [json.loads(line) for line in rl.ok("system", "df", "--format", "json").splitlines()]
    return {r["Type"]: r for r in rows}


def test_df_and_prune(rl, registry):
    ref = registry.ref("busybox")
    table = rl.ok("system", "df").splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split() for line in table[1:]] == [
        ["Images", "0", "0", "0B", "0B"], ["Containers", "0", "0", "0B", "0B"],
        ["Local", "Volumes", "0", "0", "0B", "0B"], ["Build", "Cache", "0", "0", "0B", "0B"]]

    rl.ok("run", "--name", "w", "--network", "none", "-v", "/anon", ref,
          "sh", "-c", "head -c 300000 /dev/zero > /big")
    rl.ok("network", "create", "n1")
    df = _df(rl)
    assert (df["Images"]["TotalCount"], df["Images"]["Active"]) == ("1", "1")
    assert df["Images"]["Reclaimable"] == "0B (0%)"          # the stopped container uses it
    assert (df["Containers"]["TotalCount"], df["Containers"]["Active"]) == ("1", "0")
    assert _bytes(df["Containers"]["Size"]) >= 300000
    assert df["Containers"]["Reclaimable"].endswith("(100%)")
    assert (df["Local Volumes"]["TotalCount"], df["Local Volumes"]["Active"]) == ("1", "1")
    assert rl.ok("system", "df", "--format", "{{.Type}}={{.TotalCount}}").splitlines()[0] == "Images=1"

    # without -f it asks, and "no" (or no answer) removes nothing
    for answer in ("", "no\n"):
        cp = rl("system", "prune", input=answer)
        assert cp.returncode == 0 and "all stopped containers" in cp.stdout and "Deleted" not in cp.stdout
    assert rl.ok("ps", "-aq") != ""

    cid = rl.ok("ps", "-aq", "--no-trunc").strip()
    out = rl.ok("system", "prune", input="y\n")
    assert f"Deleted Containers:\n{cid}\n" in out
    assert "Deleted Networks:\nn1\n" in out
    assert "Deleted Images" not in out and "Deleted Volumes" not in out    # tagged; no --volumes
    reclaimed = re.search(r"Total reclaimed space: (\S+)", out).group(1)
    assert _bytes(reclaimed) >= 300000
    assert rl.ok("ps", "-aq") == "" and rl.ok("network", "ls", "-q", "--filter", "type=custom") == ""
    df = _df(rl)
    assert (df["Images"]["Active"], df["Images"]["Reclaimable"]) == ("0", df["Images"]["Size"] + " (100%)")
    assert (df["Local Volumes"]["TotalCount"], df["Local Volumes"]["Active"]) == ("1", "0")

    out = rl.ok("system", "prune", "-a", "-f", "--volumes")
    assert "Deleted Volumes:" in out and "Deleted Images:\ndeleted: sha256:" in out
    assert rl.ok("images", "-q") == "" and rl.ok("volume", "ls", "-q") == ""
    assert all(r["TotalCount"] == "0" and r["Size"] == "0B" for r in _df(rl).values())


def test_store_in_an_unreadable_directory_is_one_line_error(rl, tmp_path):
    """`--root` inside a directory the user cannot enter: Error + Hint, exit 125, no traceback."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        for cmd in (["images"], ["ps", "-a"], ["volume", "ls"], ["system", "df"]):
            cp = rl("--root", str(locked / "store"), *cmd)
            assert cp.returncode == 125, (cmd, cp.stderr)
            assert "Traceback" not in cp.stderr, (cmd, cp.stderr)
            lines = cp.stderr.splitlines()
            assert lines[0].startswith(f"Error: {locked}/store") and "Permission denied" in lines[0], cmd
            assert lines[1].startswith("Hint: ") and "--root" in lines[1], cmd
    finally:
        locked.chmod(0o700)


def test_prune_build_cache_unused_then_all(rl, tmp_path):
    """system prune keeps the cache entries whose layers an image uses (dropping them frees
    nothing); the others go; -a drops the whole cache."""
    from tests.integration.buildutil import write_context

    ctx = write_context(tmp_path / "c", {"Dockerfile": "FROM scratch\nCOPY one /one\nCOPY two /two\n",
                                         "one": "1" * 50000, "two": "2" * 70000})
    rl.ok("build", "-q", "-t", "b:1", str(ctx))
    (ctx / "two").write_text("3" * 90000)                  # a second image; its old /two layer only cached
    rl.ok("build", "-q", "-t", "b:1", str(ctx))
    df = _df(rl)
    assert (df["Images"]["TotalCount"], df["Build Cache"]["TotalCount"]) == ("2", "3")
    assert df["Build Cache"]["Size"] == "0B"                   # every cached layer is an image's too
    rl.ok("image", "prune", "-f")                              # the first b:1, now dangling
    df = _df(rl)
    assert 70000 <= _bytes(df["Build Cache"]["Size"]) < 90000   # the old /two layer: only the cache has it
    out = rl.ok("system", "prune", "-f")
    assert "Deleted build cache objects: 1" in out
    assert 70000 <= _bytes(re.search(r"Total reclaimed space: (\S+)", out).group(1)) < 90000
    df = _df(rl)
    assert (df["Build Cache"]["TotalCount"], df["Build Cache"]["Size"]) == ("2", "0B")
    rebuilt = rl("build", "-t", "b:1", str(ctx))
    assert rebuilt.returncode == 0 and rebuilt.stderr.count("--> Using cache") == 2, rebuilt.stderr
    out = rl.ok("system", "prune", "-a", "-f")
    assert "Deleted build cache objects: 2" in out
    assert rl.ok("images", "-q") == "" and _df(rl)["Build Cache"]["TotalCount"] == "0"


def test_bad_format_template_is_a_one_line_error_in_every_command(rl):
    """Go's template parser refuses an unclosed action even with nothing to list: 125, one line."""
    cmds = [["images"], ["ps", "-a"], ["volume", "ls"], ["network", "ls"], ["system", "df"], ["info"],
            ["version"], ["history", "nothere"]]
    for cmd in cmds:
        for fmt in ("{{", "{{.ID"):
            cp = rl(*cmd, "--format", fmt)
            assert cp.returncode == 125 and cp.stdout == "", (cmd, fmt, cp.stdout, cp.stderr)
            err = cp.stderr.splitlines()
            assert err[0] == "Error: template: unclosed action", (cmd, err)
            assert len(err) == 2 and err[1].startswith("Hint: "), (cmd, err)
    for cmd in (["info"], ["version"]):
        cp = rl(*cmd, "--format", "{{.Nope}}")
        assert cp.returncode == 125 and "can't evaluate field Nope" in cp.stderr, (cmd, cp.stderr)
        cp = rl(*cmd, "--format", "{{frob .}}")
        assert cp.returncode == 125 and 'function "frob" not defined' in cp.stderr, (cmd, cp.stderr)
