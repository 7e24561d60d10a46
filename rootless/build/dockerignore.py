""".dockerignore: reading (moby's ignorefile) and matching (moby/patternmatcher).

Reading: a UTF-8 BOM is dropped; lines starting with ``#`` are comments;
blanks around a pattern are removed; the pattern is cleaned (Go's
``filepath.Clean``) and a leading ``/`` dropped; ``!`` re-includes.

Matching: Go ``filepath.Match`` syntax (``*`` and ``?`` never cross ``/``,
``[...]`` classes, ``\\`` escapes) plus ``**`` for any number of
directories; the last matching pattern wins; a pattern that matches a
directory matches everything below it.  ``ContextFilter.walk`` visits a
context the way BuildKit's file sync does: an excluded directory is
skipped unless a ``!`` pattern may re-include something inside it.

Where the file is: ``<Dockerfile>.dockerignore`` next to the Dockerfile
wins over ``.dockerignore`` at the root of the context (BuildKit).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from rootless.errors import BuildError

_ESCAPE = set(".+()|{}$")


class BadPattern(ValueError):
    pass


def go_clean(p: str) -> str:
    """Go's path.Clean: "" -> ".", keeps a leading "/", no trailing "/"."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(seg)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


def read_patterns(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        if invert:
            pattern = "!" + pattern
        out.append(pattern)
    return out


def validate_go_pattern(p: str) -> None:
    """Raise BadPattern where Go's filepath.Match would return ErrBadPattern."""
    i = 0
    n = len(p)
    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                raise BadPattern("syntax error in pattern")
            i += 2
            continue
        if c == "[":
            i += 1
            if i < n and p[i] == "^":
                i += 1
            first = True
            while True:
                if i >= n:
                    raise BadPattern("syntax error in pattern")
                if p[i] == "]" and not first:
                    i += 1
                    break
                first = False
                lo, i = _class_char(p, i)
                if i < n and p[i] == "-":
                    hi, i = _class_char(p, i + 1)
                    if hi < lo:
                        raise BadPattern("syntax error in pattern")
            continue
        if c == "]":
            pass
        i += 1


def _class_char(p: str, i: int) -> tuple[str, int]:
    n = len(p)
    if i >= n or p[i] in "-]":
        raise BadPattern("syntax error in pattern")
    if p[i] == "\\":
        i += 1
        if i >= n:
            raise BadPattern("syntax error in pattern")
    return p[i], i + 1


@dataclass
class Pattern:
    cleaned: str
    exclusion: bool
    dirs: int
    kind: str = ""            # exact | prefix | suffix | regexp
    regex: "re.Pattern | None" = None

    def compile(self) -> None:
        reg = ["^"]
        kind = "exact"
        p = self.cleaned
        i = 0
        n = len(p)
        it = 0
        in_class = False
        while i < n:
            ch = p[i]
            i += 1
            if in_class:
                if ch == "]":
                    in_class = False
                    reg.append("]")
                elif ch == "\\" and i < n:
                    reg.append(re.escape(p[i]))
                    i += 1
                else:
                    reg.append(ch if ch in "^-" else re.escape(ch))
                it += 1
                continue
            if ch == "*":
                if i < n and p[i] == "*":
                    i += 1
                    if i < n and p[i] == "/":
                        i += 1
                    if i >= n:
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            reg.append(".*")
                            kind = "regexp"
                    else:
                        reg.append("(.*/)?")
                        kind = "regexp"
                    if it == 0:
                        kind = "suffix"
                else:
                    reg.append("[^/]*")
                    kind = "regexp"
            elif ch == "?":
                reg.append("[^/]")
                kind = "regexp"
            elif ch in _ESCAPE:
                reg.append("\\" + ch)
            elif ch == "\\":
                if i < n:
                    reg.append("\\" + p[i] if not p[i].isalnum() else re.escape(p[i]))
                    i += 1
                    kind = "regexp"
                else:
                    reg.append("\\\\")
            elif ch == "[":
                reg.append("[")
                in_class = True
                kind = "regexp"
            elif ch == "]":
                reg.append("\\]")
                kind = "regexp"
            else:
                reg.append(re.escape(ch) if ch in "^\\" else ch)
            it += 1
        if kind == "regexp":
            reg.append("$")
            try:
                self.regex = re.compile("".join(reg), re.S)
            except re.error:
                raise BadPattern("syntax error in pattern") from None
        self.kind = kind

    def match(self, path: str) -> bool:
        if not self.kind:
            self.compile()
        if self.kind == "exact":
            return path == self.cleaned
        if self.kind == "prefix":
            return path.startswith(self.cleaned[:-2])
        if self.kind == "suffix":
            suffix = self.cleaned[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


class PatternMatcher:
    def __init__(self, patterns: list[str]):
        self.patterns: list[Pattern] = []
        self.exclusions = False
        for p in patterns:
            p = p.strip()
            if not p:
                continue
            p = go_clean(p)
            excl = False
            if p.startswith("!"):
                if len(p) == 1:
                    raise BadPattern('illegal exclusion pattern: "!"')
                excl = True
                p = p[1:]
                self.exclusions = True
            validate_go_pattern(p)
            pat = Pattern(cleaned=p, exclusion=excl, dirs=len(p.split("/")))
            pat.compile()
            self.patterns.append(pat)

    def matches(self, path: str, parent_info: list[bool] | None = None) -> tuple[bool, list[bool]]:
        """MatchesUsingParentResults: (excluded?, per-pattern info for the children)."""
        matched = False
        info = [False] * len(self.patterns)
        for i, pat in enumerate(self.patterns):
            m = bool(parent_info[i]) if parent_info else False
            if not m:
                if pat.exclusion != matched:
                    continue
                m = pat.match(path)
                if not m and not parent_info:
                    parent = posixpath.dirname(path)
                    if parent not in ("", "."):
                        dirs = parent.split("/")
                        for j in range(len(dirs)):
                            if pat.match("/".join(dirs[:j + 1])):
                                m = True
                                break
            info[i] = m
            if m:
                matched = not pat.exclusion
        return matched, info

    def excluded(self, path: str) -> bool:
        """MatchesOrParentMatches for one slash path relative to the context."""
        path = go_clean(path)
        if path == ".":
            return False
        return self.matches(path)[0]

    def may_reinclude_below(self, dirpath: str) -> bool:
        """Could a ``!`` pattern re-include something under the excluded directory?

        As BuildKit's file sync: with only plain (prefix) exceptions, walk
        into the directory only when an exception names a path below it;
        an exception with wildcards may match anywhere.
        """
        if not self.exclusions:
            return False
        prefix = dirpath + "/"
        for pat in self.patterns:
            if not pat.exclusion:
                continue
            s = pat.cleaned
            for tail in ("/**", "**"):
                if s.endswith(tail):
                    s = s[: -len(tail)]
                    break
            if any(c in s for c in "*?[\\"):
                return True
            if (s + "/").startswith(prefix):
                return True
        return False


def load_ignore(context: Path, dockerfile: Path | None = None) -> list[str]:
    """The patterns for a build: ``<Dockerfile>.dockerignore`` or ``<context>/.dockerignore``."""
    candidates = []
    if dockerfile is not None:
        candidates.append(Path(str(dockerfile) + ".dockerignore"))
    candidates.append(context / ".dockerignore")
    for c in candidates:
        try:
            text = c.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise BuildError(f"cannot read {c}: {e.strerror}") from None
        return read_patterns(text)
    return []


class ContextFilter:
    """The build context as BuildKit sees it after .dockerignore."""

    def __init__(self, root: Path, patterns: list[str] | None = None):
        self.root = Path(root)
        try:
            self.matcher = PatternMatcher(patterns or [])
        except BadPattern as e:
            raise BuildError(f".dockerignore: {e}", hint="patterns use Go filepath.Match syntax with ** "
                                                         "(see https://docs.docker.com/build/concepts/context/)"
                             ) from None

    def excluded(self, rel: str) -> bool:
        return self.matcher.excluded(rel)

    def walk(self, rel: str = "") -> "list[tuple[str, os.stat_result]]":
        """Every entry under ``rel`` (slash paths relative to the context) that is not excluded.

        Directories that are themselves excluded but hold re-included
        entries are listed (they must exist to hold them). Directories
        that cannot be read (listed, or their entries looked at) are
        listed, without content, and remembered in ``unreadable``: a COPY
        that reaches one fails naming it (``ContextFS``).
        """
        out: list[tuple[str, os.stat_result]] = []
        self.unreadable: list[str] = []
        self._walk(rel, None, out)
        return out

    def _walk(self, rel: str, parent_info, out) -> bool:
        base = self.root / rel if rel else self.root
        try:
            names = sorted(os.listdir(base))
        except FileNotFoundError:
            return False
        except OSError:
            self.unreadable.append(rel)
            return False
        any_included = False
        mark = len(out)
        for name in names:
            child = f"{rel}/{name}" if rel else name
            try:
                st = os.lstat(base / name)
            except PermissionError:
                # a directory that can be listed but not searched: none of its entries can be read
                del out[mark:]
                self.unreadable.append(rel)
                return False
            except OSError:
                continue        # gone meanwhile
            excluded, info = self.matcher.matches(child, parent_info)
            import stat as _stat

            is_dir = _stat.S_ISDIR(st.st_mode)
            if excluded:
                if is_dir and self.matcher.may_reinclude_below(child):
                    mark = len(out)
                    out.append((child, st))
                    if not self._walk(child, info, out):
                        del out[mark]
                    else:
                        any_included = True
                continue
            out.append((child, st))
            any_included = True
            if is_dir:
                self._walk(child, info, out)
        return any_included
