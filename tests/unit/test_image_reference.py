import pytest

from rootless.errors import InvalidReference
from rootless.image.reference import familiar_match, familiar_name, is_localhost, parse, path_pattern


@pytest.mark.parametrize("s,name,tag,digest", [
    ("busybox", "docker.io/library/busybox", "latest", None),
    ("busybox:1.36", "docker.io/library/busybox", "1.36", None),
    ("library/busybox", "docker.io/library/busybox", "latest", None),
    ("docker.io/busybox", "docker.io/library/busybox", "latest", None),
    ("index.docker.io/library/busybox", "docker.io/library/busybox", "latest", None),
    ("user/app:v1", "docker.io/user/app", "v1", None),
    ("localhost/app", "localhost/app", "latest", None),
    ("localhost:5000/ns/app:tag", "localhost:5000/ns/app", "tag", None),
    ("127.0.0.1:5000/ns/sub/app", "127.0.0.1:5000/ns/sub/app", "latest", None),
    ("ghcr.io/owner/img:1.0-rc.1", "ghcr.io/owner/img", "1.0-rc.1", None),
    ("quay.io/a/b@sha256:" + "a" * 64, "quay.io/a/b", None, "sha256:" + "a" * 64),
    ("busybox:tag@sha256:" + "b" * 64, "docker.io/library/busybox", "tag", "sha256:" + "b" * 64),
    ("[::1]:5000/app", "[::1]:5000/app", "latest", None),
])
def test_parse(s, name, tag, digest):
    r = parse(s)
    assert r.name == name
    assert r.tag == tag
    assert r.digest == digest


def test_reference_used_for_pull_prefers_digest():
    r = parse("busybox:tag@sha256:" + "b" * 64)
    assert r.reference == "sha256:" + "b" * 64
    assert parse("busybox").reference == "latest"
    assert parse("busybox").registry_host == "registry-1.docker.io"
    assert parse("127.0.0.1:5000/x").registry_host == "127.0.0.1:5000"


@pytest.mark.parametrize("bad", ["", "Busybox", "busybox:", "busybox:-x", "a//b", "http://x/y",
                                 "busybox@sha256:123", "busybox@md5", " busybox", "UPPER/case",
                                 "busybox:" + "t" * 129, "a:b:c"])
def test_invalid(bad):
    with pytest.raises(InvalidReference) as e:
        parse(bad)
    assert "invalid reference format" in e.value.message


def test_uppercase_hint():
    with pytest.raises(InvalidReference) as e:
        parse("MyImage")
    assert "lowercase" in e.value.message


def test_familiar():
    assert familiar_name("docker.io/library/busybox") == "busybox"
    assert familiar_name("docker.io/user/app") == "user/app"
    assert familiar_name("127.0.0.1:5000/busybox") == "127.0.0.1:5000/busybox"
    assert parse("busybox").familiar == "busybox:latest"


@pytest.mark.parametrize("host,local", [("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True),
                                        ("127.1.2.3", True), ("[::1]:5000", True), ("::1", True),
                                        ("128.0.0.1", False), ("ghcr.io", False), ("127.0.0.1.evil.com", False)])
def test_localhost(host, local):
    assert is_localhost(host) is local


@pytest.mark.parametrize("pattern,name,tag,want", [
    ("busybox", "docker.io/library/busybox", "latest", True),
    ("busybox:latest", "docker.io/library/busybox", "latest", True),
    ("busybox:1", "docker.io/library/busybox", "latest", False),
    ("docker.io/library/busybox", "docker.io/library/busybox", "latest", True),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox", "latest", True),
    ("library/busybox", "docker.io/library/busybox", "latest", False),
    ("busy*", "docker.io/library/busybox", "latest", True),
    ("*", "docker.io/library/busybox", "latest", True),
    ("*", "docker.io/user/app", "1", False),            # * stops at '/'
    ("*/*", "docker.io/user/app", "1", True),
    ("*:1", "docker.io/user/app", "1", False),
    ("user/*:1", "docker.io/user/app", "1", True),
    ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox", "latest", True),
    ("127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox", "latest", True),
    ("127.0.0.1:*/busybox:lat?st", "127.0.0.1:5000/busybox", "latest", True),
    ("*/busybox", "127.0.0.1:5000/busybox", "latest", True),
    ("busybox", "127.0.0.1:5000/busybox", "latest", False),
    ("x:[0-9]", "docker.io/library/x", "1", True),
    ("x:[^0-9]", "docker.io/library/x", "1", False),
    ("x:\\1", "docker.io/library/x", "1", True),
    ("x.", "docker.io/library/xy", "1", False),          # no regex meaning
])
def test_familiar_match(pattern, name, tag, want):
    assert familiar_match(pattern, name, tag=tag) is want


@pytest.mark.parametrize("bad", ["[", "x[", "[]", "x\\", "[a-", "[-a]", "[z-a]"])
def test_bad_match_pattern(bad):
    with pytest.raises(InvalidReference, match="syntax error in pattern"):
        path_pattern(bad)


@pytest.mark.parametrize("bad", ["evil\n", "busybox:latest\n", "busybox\n:latest", "busybox:tést", "busybox:ｔａｇ",
                                 "busybox:١", "bü/x", "registry.exämple.com/x", "Busybox", "myrepo/MyApp:1",
                                 "busybox@sha256:" + "a" * 64 + "\n", "busybox:" + "t" * 129])
def test_invalid_newline_non_ascii_uppercase_long_tag(bad):
    with pytest.raises(InvalidReference):
        parse(bad)


def test_anchored_ascii_patterns():
    from rootless.image import reference as r

    h = "a" * 64
    assert r.is_image_id(h) and r.is_image_id("sha256:" + h)
    assert not r.is_image_id(h + "\n") and not r.is_image_id("sha256:" + h + "\n")
    for rx, good in ((r._TAG_RE, "v1"), (r._PATH_RE, "library/busybox"), (r._DOMAIN_RE, "127.0.0.1:5000"),
                     (r._SHA256_RE, "sha256:" + h), (r._DIGEST_RE, "sha256:" + h)):
        assert rx.match(good) and not rx.match(good + "\n"), rx.pattern
    # what Docker accepts: a 128-character tag, upper case in the tag and in the registry host
    assert parse("busybox:" + "T" * 128).tag == "T" * 128
    assert parse("Registry.Example.com:5000/app:V1_x.y-z").name == "Registry.Example.com:5000/app"
