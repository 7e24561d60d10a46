""".dockerignore reading and matching (moby/patternmatcher semantics)."""

import os

import pytest

from rootless.build.dockerignore import (BadPattern, ContextFilter, PatternMatcher, go_clean, load_ignore,
                                         read_patterns)
from rootless.errors import BuildError


def excluded(patterns, path):
    return PatternMatcher(patterns).excluded(path)


# pattern, path, exact match?, match with parents (the .dockerignore answer)
SINGLE = [
    ("**", "file", True, True), ("**", "file/", True, True), ("**/", "file", True, True), ("**", "dir/file", True, True),
    ("**/**", "dir/file", True, True), ("dir/**", "dir/file", True, True), ("dir/**", "dir/dir2/file", True, True),
    ("**/dir", "dir", True, True), ("**/dir", "dir/file", False, True), ("**/dir2/*", "dir/dir2/file", True, True),
    ("**/dir2/**", "dir/dir2/dir3/file", True, True), ("**file", "file", True, True), ("**file", "dir/file", True, True),
    ("**/file", "dir/dir/file", True, True), ("**/file*", "dir/dir/file.txt", True, True),
    ("**/file*txt", "dir/dir/file.txt", True, True), ("**/**/*.txt", "dir/dir/file.txt", True, True),
    ("**/**/*.txt2", "dir/dir/file.txt", False, False), ("**/*.txt", "file.txt", True, True),
    ("a**/*.txt", "a/dir/dir/file.txt", True, True), ("a/*.txt", "a/dir/file.txt", False, False),
    ("a/*.txt", "a/file.txt", True, True), ("a/*.txt**", "a/file.txt", True, True), ("a[b-d]e", "ae", False, False),
    ("a[b-d]e", "ace", True, True), ("a[^b-d]e", "aze", True, True), (".*", ".foo", True, True), (".*", "foo", False, False),
    ("abc.def", "abcdef", False, False), ("abc.def", "abc.def", True, True), ("abc?def", "abcZdef", True, True),
    ("abc?def", "abcdef", False, False), ("**/foo/bar", "foo/bar", True, True), ("**/foo/bar", "dir/dir2/foo/bar", True, True),
    ("abc/**", "abc", False, False), ("abc/**", "abc/def/ghi", True, True), ("**/.foo", ".foo", True, True),
    ("**/.foo", "bar.foo", False, False), ("a(b)c/def", "a(b)c/def", True, True), ("a.|)$(}+{bc", "a.|)$(}+{bc", True, True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True, True),
    ("a\\\\", "a\\", True, True), ("a\\*b", "a*b", True, True), ("a\\*b", "ab", False, False),
    ("docs", "docs/README.md", False, True), ("*", "a/b/c", False, True), ("a*", "ab/c", False, True),
    ("a*/b", "a/c/b", False, False), ("a?b", "a/b", False, False), ("a*b", "a/b", False, False),
    ("[\\]a]", "]", True, True), ("[\\-x]", "-", True, True), ("[x\\-]", "z", False, False), ("[a-ζ]*", "α", True, True),
    ("*[a-ζ]", "A", False, False), ("a?b", "a☺b", True, True), ("a???b", "a☺b", False, False),
]


@pytest.mark.parametrize("pattern,path,exact,with_parents", SINGLE)
def test_single_pattern(pattern, path, exact, with_parents):
    pm = PatternMatcher([pattern])
    assert pm.patterns[0].match(path) == exact
    assert pm.excluded(path) == with_parents


@pytest.mark.parametrize("patterns,path,result", [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/*.whl"], "dist/x.whl", False),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/other.md", True),
    (["*.go"], ".", False),
    ([], "any/path", False),
    (read_patterns("/abs/path"), "abs/path", True),
    (read_patterns("./rel/./x/../y"), "rel/y", True),
    (["**/*.tmp", "!keep/**"], "keep/a.tmp", False),
    (["**/*.tmp", "!keep/**"], "other/a.tmp", True),
])
def test_multiple_patterns(patterns, path, result):
    assert excluded(patterns, path) == result


@pytest.mark.parametrize("bad", ["[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "!"])
def test_bad_patterns(bad):
    with pytest.raises(BadPattern):
        PatternMatcher([bad])


def test_read_patterns():
    text = "\ufeff# comment\n  node_modules  \n/abs\n!  /keep/me/\n\n*.log\n  # not a comment\n./a/../b/\n!\n"
    assert read_patterns(text) == ["node_modules", "abs", "!keep/me", "*.log", "# not a comment", "b", "!"]


@pytest.mark.parametrize("p,c", [("", "."), ("a//b/", "a/b"), ("/a/../../b", "/b"), ("../x", "../x"),
                                 ("a/./b/..", "a"), ("/", "/"), ("./", ".")])
def test_go_clean(p, c):
    assert go_clean(p) == c


def make_tree(root, files):
    for f in files:
        p = root / f
        if f.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f)


def test_context_walk(tmp_path):
    make_tree(tmp_path, ["a.txt", "b.log", "src/main.c", "src/gen/out.o", "node_modules/x/index.js",
                         "docs/README.md", "docs/other.md", ".git/HEAD", "Dockerfile", "empty/"])
    cf = ContextFilter(tmp_path, ["*.log", "node_modules", "**/*.o", "docs", "!docs/README.md", ".git"])
    got = [p for p, _ in cf.walk()]
    assert got == ["Dockerfile", "a.txt", "docs", "docs/README.md", "empty", "src", "src/gen", "src/main.c"]


def test_context_walk_reinclude_with_wildcard(tmp_path):
    make_tree(tmp_path, ["build/a/keep.txt", "build/a/drop.bin", "build/b/drop.bin"])
    cf = ContextFilter(tmp_path, ["build", "!build/**/*.txt"])
    assert [p for p, _ in cf.walk()] == ["build", "build/a", "build/a/keep.txt"]


def test_context_filter_bad_pattern(tmp_path):
    with pytest.raises(BuildError, match=".dockerignore: syntax error in pattern"):
        ContextFilter(tmp_path, ["[oops"])


def test_load_ignore_prefers_dockerfile_specific(tmp_path):
    (tmp_path / ".dockerignore").write_text("a\n")
    df = tmp_path / "sub" / "Dockerfile.dev"
    df.parent.mkdir()
    df.write_text("FROM x\n")
    assert load_ignore(tmp_path, df) == ["a"]
    (tmp_path / "sub" / "Dockerfile.dev.dockerignore").write_text("b\n")
    assert load_ignore(tmp_path, df) == ["b"]
    os.remove(tmp_path / ".dockerignore")
    assert load_ignore(tmp_path, None) == []
