"""Image references, normalised as Docker does.

    busybox                      -> docker.io/library/busybox:latest
    user/app:1.0                 -> docker.io/user/app:1.0
    127.0.0.1:5000/ns/app        -> 127.0.0.1:5000/ns/app:latest
    app@sha256:<64 hex>          -> docker.io/library/app@sha256:...
    app:tag@sha256:<64 hex>      -> both kept; the digest is what is pulled

The first path component is a registry host when it contains '.' or ':' or
is 'localhost' (Docker's rule). Pure: no I/O.
"""

from __future__ import annotations

import re
from rootless.record import Record

from rootless.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
DEFAULT_TAG = "latest"

# anchored with \Z ($ also matches before a final newline) and ASCII only (\w is Unicode otherwise):
# every pattern here is used with .match and must reject "busybox\n" and "busybox:tést"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z", re.ASCII)
_DOMAIN_RE = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                        r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?\Z", re.ASCII)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}\Z", re.ASCII)
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}\Z", re.ASCII)
ID_RE = re.compile(r"(?:sha256:)?([a-f0-9]{64})\Z", re.ASCII)


class Reference(Record):
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``docker.io/library/busybox`` (no tag, no digest)."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def tagged(self) -> str:
        """``name:tag`` (the key of the tag table); ``latest`` when no tag."""
        return f"{self.name}:{self.tag or DEFAULT_TAG}"

    @property
    def familiar(self) -> str:
        """Docker's short form for display: ``busybox:latest``, ``user/app:1``."""
        return familiar_name(self.name) + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest and not self.tag else "")

    @property
    def registry_host(self) -> str:
        """The host to talk to (Docker Hub's API lives at registry-1.docker.io)."""
        return "registry-1.docker.io" if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.domain, self.path, None, digest)


def familiar_name(name: str) -> str:
    if name.startswith(DEFAULT_DOMAIN + "/"):
        rest = name[len(DEFAULT_DOMAIN) + 1:]
        return rest[len("library/"):] if rest.startswith("library/") and rest.count("/") == 1 else rest
    return name


def _split_domain(s: str) -> tuple[str, str]:
    i = s.find("/")
    if i == -1:
        return DEFAULT_DOMAIN, s
    first = s[:i]
    if "." not in first and ":" not in first and first != "localhost" and not first.startswith("["):
        return DEFAULT_DOMAIN, s
    return first, s[i + 1:]


def parse(s: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise a reference; raise InvalidReference with the reason."""
    original = s
    if not s or s != s.strip():
        raise InvalidReference(f"invalid reference format: {original!r}",
                               hint="use [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], e.g. busybox:latest")
    if s.startswith(("http://", "https://")):
        raise InvalidReference(f"invalid reference format: {original!r}: no URL scheme allowed",
                               hint="drop the http(s):// prefix, e.g. 127.0.0.1:5000/app:latest")
    digest = None
    if "@" in s:
        s, digest = s.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid reference format: {original!r}: bad digest {digest!r}",
                                   hint="a digest looks like sha256:<64 hex digits>")
        if digest.startswith("sha256:") and not _SHA256_RE.match(digest):
            raise InvalidReference(f"invalid reference format: {original!r}: bad digest {digest!r}",
                                   hint="a digest looks like sha256:<64 hex digits>")
    tag = None
    slash = s.rfind("/")
    colon = s.rfind(":")
    if colon > slash:
        s, tag = s[:colon], s[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid reference format: {original!r}: bad tag {tag!r}",
                                   hint="a tag has up to 128 letters, digits, '_', '.', '-'")
    domain, path = _split_domain(s)
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if not _DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid reference format: {original!r}: bad registry host {domain!r}")
    if not path:
        raise InvalidReference(f"invalid reference format: {original!r}: no repository name")
    if not _PATH_RE.match(path):
        if path.lower() != path and _PATH_RE.match(path.lower()):
            raise InvalidReference(f"invalid reference format: {original!r}: repository name must be lowercase",
                                   hint=f"use {path.lower()!r}")
        raise InvalidReference(f"invalid reference format: {original!r}",
                               hint="use [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST]; names are lowercase "
                                    "letters, digits and separators . _ -")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = "library/" + path
    if len(domain) + 1 + len(path) > 255:
        raise InvalidReference(f"invalid reference format: {original!r}: repository name longer than 255 characters")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def path_pattern(pattern: str) -> "re.Pattern[str]":
    """Go's ``path.Match`` pattern as a regular expression: ``*`` any run of non-'/'
    characters, ``?`` one non-'/' character, ``[a-z]``/``[^...]`` classes, ``\\`` escapes."""
    bad = InvalidReference(f"invalid reference pattern {pattern!r}: syntax error in pattern",
                           hint="patterns use * ? [a-z] [^a-z] and \\ to escape (Go's path.Match)")
    out = []
    i, n = 0, len(pattern)

    def esc_char(j: int) -> tuple[str, int]:
        if j >= n or pattern[j] in "-]":
            raise bad
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                raise bad
        return pattern[j], j + 1

    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise bad
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            neg = i < n and pattern[i] == "^"
            if neg:
                i += 1
            ranges = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = esc_char(i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = esc_char(i + 1)
                if hi < lo:
                    raise bad
                ranges.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
            out.append("[" + ("^" if neg else "") + "".join(ranges) + "]")
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.S)


def familiar_match(pattern: str, name: str, tag: str | None = None, digest: str | None = None) -> bool:
    """Does ``pattern`` match the reference NAME[:TAG|@DIGEST]? Docker's FamiliarMatch (the
    familiar string, then the familiar name: ``busybox:latest``, ``busybox``), and the same for
    the full name (``docker.io/library/busybox:latest``). Bad patterns raise InvalidReference."""
    rx = path_pattern(pattern)
    fam = familiar_name(name)
    suffix = f":{tag}" if tag else (f"@{digest}" if digest else "")
    return any(rx.fullmatch(c) for c in (fam + suffix, fam, name + suffix, name))


def is_image_id(s: str) -> bool:
    return bool(ID_RE.match(s))


def is_localhost(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (with or without a port): plain HTTP by default."""
    h = host
    if h.startswith("["):
        h = h[1:h.index("]")] if "]" in h else h
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h == "localhost" or h.endswith(".localhost"):
        return True
    if h == "::1":
        return True
    parts = h.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts)
