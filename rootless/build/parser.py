"""Dockerfile syntax: lines -> nodes, exactly as BuildKit's parser.

What this module does (BuildKit ``frontend/dockerfile/parser``):

* parser directives at the very top (``# escape=``, ``# syntax=``,
  ``# check=``), case-insensitive, each at most once; the first line that
  is not a directive (a blank line, another comment, an instruction) ends
  them; unknown directives are plain comments;
* a UTF-8 BOM on the first line is dropped;
* comments are lines whose first non-blank character is ``#``; they may
  sit between continuation lines; an empty continuation line is skipped
  (with a warning);
* the escape token (``\\`` or ``` ` ```) at the end of a line continues it;
* per instruction, the arguments are split the way BuildKit does it:
  JSON arrays (exec form) or a string (shell form) for RUN/CMD/ENTRYPOINT/
  SHELL, JSON or whitespace-separated words for COPY/ADD/VOLUME, key=value
  pairs (or the legacy ``KEY value``) for ENV/LABEL, words for ARG, etc.;
* flags ``--name=value`` before the arguments;
* heredocs (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, several per line) for
  RUN, COPY and ADD (also inside ONBUILD), not in the JSON form.

Variables are *not* expanded here: that depends on ARG/ENV state and
happens when the build plan is made (``rootless.build.plan``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from rootless.build.lex import Lex, LexError
from rootless.errors import BuildError

_WS = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$", re.S)
_LEADING_TABS = re.compile(r"^\t+", re.M)

VALID_DIRECTIVES = ("escape", "syntax", "check")
HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})

INSTRUCTIONS = ("add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck",
                "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir")


class DockerfileError(BuildError):
    """A Dockerfile that cannot be parsed: names the file, the line and the instruction."""

    def __init__(self, message: str, *, file: str = "Dockerfile", line: int = 0, end_line: int = 0,
                 instruction: str = "", source: str = ""):
        where = f"{file}:{line}" if line else file
        text = message
        if instruction and not message.upper().startswith(instruction.upper()):
            text = f"{instruction.upper()}: {message}"
        hint = f"line {line}: {source.strip()}" if source.strip() else None
        super().__init__(f"{where}: {text}", hint=hint)
        self.file = file
        self.line = line
        self.end_line = end_line or line
        self.instruction = instruction.upper()
        self.detail = message


class _SyntaxError(Exception):
    """Internal: a message; the caller adds the location."""


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    fd: int = 0

    @property
    def text(self) -> str:
        """The content with leading tabs removed for ``<<-``."""
        return chomp_heredoc(self.content) if self.chomp else self.content


@dataclass(frozen=True)
class Node:
    """One instruction as written: the arguments are split but not expanded."""

    cmd: str                                 # lower case: "run", "copy", ...
    args: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    json: bool = False                       # exec (JSON array) form
    heredocs: tuple[Heredoc, ...] = ()
    original: str = ""                       # the logical line (continuations joined)
    start_line: int = 0
    end_line: int = 0
    sub: "Node | None" = None                # ONBUILD's trigger
    comments: tuple[str, ...] = ()
    written_cmd: str = ""                    # the instruction word as written (case kept)

    @property
    def instruction(self) -> str:
        return self.cmd.upper()

    def dump(self) -> str:
        """BuildKit's AST dump: ``(run "echo hi")`` (used by golden tests)."""
        out = self.cmd
        if self.flags:
            out += " [" + " ".join(go_quote(f) for f in self.flags) + "]"
        if self.sub is not None:
            return f"({out} {self.sub.dump()})"
        for a in self.args:
            out += " " + go_quote(a)
        return f"({out})"


@dataclass(frozen=True)
class ParseResult:
    nodes: tuple[Node, ...]
    escape_token: str = "\\"
    directives: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def directive(self, name: str) -> str | None:
        for k, v in self.directives:
            if k == name:
                return v
        return None


@dataclass
class _Directives:
    escape: str = "\\"
    done: bool = False
    seen: dict[str, str] = field(default_factory=dict)
    continuation: re.Pattern = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.set_escape("\\")

    def set_escape(self, s: str) -> None:
        if s not in ("`", "\\"):
            raise _SyntaxError(f"invalid escape token '{s}' does not match ` or \\")
        self.escape = s
        e = re.escape(s)
        # the token at the end of a line (after optional blanks) continues it,
        # unless it is itself escaped; a line of only the token continues too
        self.continuation = re.compile(r"([^" + e + r"])" + e + r"[ \t]*\Z|^" + e + r"[ \t]*\Z")

    def possible(self, line: str) -> None:
        if self.done:
            return
        m = _DIRECTIVE.match(line)
        if not m:
            self.done = True
            return
        k = m.group(1).lower()
        if k not in VALID_DIRECTIVES:
            self.done = True
            return
        if k in self.seen:
            raise _SyntaxError(f"only one {k} parser directive can be used")
        self.seen[k] = m.group(2)
        if k == "escape":
            self.set_escape(m.group(2))


def chomp_heredoc(content: str) -> str:
    return _LEADING_TABS.sub("", content)


def _split_lines(text: str) -> list[str]:
    """Lines with their line endings (BuildKit's scanLines)."""
    out = []
    start = 0
    n = len(text)
    while start < n:
        i = text.find("\n", start)
        if i < 0:
            out.append(text[start:])
            break
        out.append(text[start:i + 1])
        start = i + 1
    return out


def _trim_newline(s: str) -> str:
    return s.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return _trim_newline(line).lstrip().startswith("#")


def _process_line(d: _Directives, token: str, strip_left: bool) -> str:
    token = _trim_newline(token)
    if strip_left:
        token = token.lstrip()
    d.possible(token)
    return "" if token.startswith("#") else token


def _trim_continuation(line: str, d: _Directives) -> tuple[str, bool]:
    if d.continuation.search(line):
        return d.continuation.sub(r"\1", line), False
    return line, True


def parse(text: str | bytes, filename: str = "Dockerfile") -> ParseResult:
    """Parse a whole Dockerfile; raise DockerfileError with file and line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DockerfileError(f"not valid UTF-8 text (byte {e.start})", file=filename) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _split_lines(text)
    d = _Directives()
    nodes: list[Node] = []
    warnings: list[str] = []
    comments: list[str] = []
    current = 0
    i = 0
    n = len(lines)
    while i < n:
        raw = lines[i]
        i += 1
        if _is_comment(raw):
            c = _trim_newline(raw).lstrip()[1:].strip()
            comments.append(c)
        try:
            line = _process_line(d, raw, True)
        except _SyntaxError as e:
            raise DockerfileError(str(e), file=filename, line=current + 1, source=raw) from None
        current += 1
        start = current
        line, end = _trim_continuation(line, d)
        if end and line == "":
            continue
        empty_continuation = False
        while not end and i < n:
            raw = lines[i]
            i += 1
            try:
                cont = _process_line(d, raw, False)
            except _SyntaxError as e:
                raise DockerfileError(str(e), file=filename, line=current + 1, source=raw) from None
            current += 1
            if _is_comment(raw):
                continue
            if not cont.strip():
                empty_continuation = True
                continue
            cont, end = _trim_continuation(cont, d)
            line += cont
        if empty_continuation:
            warnings.append(f"{filename}:{start}: empty continuation line (will become an error in a future "
                            f"Dockerfile syntax)")
        try:
            node = _node_from_line(line, d.escape)
        except _SyntaxError as e:
            raise DockerfileError(str(e), file=filename, line=start, end_line=current,
                                  instruction=_first_word(line), source=line) from None
        heredocs: list[Heredoc] = []
        if _can_contain_heredoc(node):
            try:
                found = heredocs_from_line(line)
            except _SyntaxError as e:
                raise DockerfileError(str(e), file=filename, line=start, instruction=node.cmd,
                                      source=line) from None
            for h in found:
                content: list[str] = []
                terminated = False
                while i < n:
                    raw = lines[i]
                    i += 1
                    current += 1
                    candidate = _trim_newline(raw)
                    if h.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == h.name:
                        terminated = True
                        break
                    content.append(raw)
                if not terminated:
                    raise DockerfileError(f"unterminated heredoc {h.name!r}", file=filename, line=start,
                                          end_line=current, instruction=node.cmd, source=line)
                heredocs.append(Heredoc(h.name, "".join(content), h.expand, h.chomp, h.fd))
        node = _replace(node, heredocs=tuple(heredocs), original=line, start_line=start, end_line=current,
                        comments=tuple(comments))
        nodes.append(node)
        comments = []
    if not nodes:
        raise DockerfileError("file with no instructions", file=filename, line=current or 0,
                              source="")
    return ParseResult(tuple(nodes), d.escape, tuple(d.seen.items()), tuple(warnings))


def _replace(node: Node, **kw) -> Node:
    import dataclasses

    return dataclasses.replace(node, **kw)


def _first_word(line: str) -> str:
    parts = _WS.split(line.strip(), maxsplit=1)
    return parts[0] if parts else ""


def _can_contain_heredoc(node: Node) -> bool:
    if node.cmd == "onbuild" and node.sub is not None:
        node = node.sub
    return node.cmd in HEREDOC_INSTRUCTIONS and not node.json


def go_quote(s: str) -> str:
    """Go's strconv.Quote (for golden dumps and history lines)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\a":
            out.append("\\a")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\v":
            out.append("\\v")
        elif o < 0x20 or o == 0x7f:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)



# ---------------------------------------------------------------------------
# one logical line -> Node

def _node_from_line(line: str, escape: str) -> Node:
    cmd, flags, rest = split_command(line)
    fn = _DISPATCH.get(cmd.lower())
    if fn is None:
        return Node(cmd=cmd.lower(), written_cmd=cmd, flags=tuple(flags), original=line)
    args, is_json, sub = fn(rest, escape)
    return Node(cmd=cmd.lower(), written_cmd=cmd, args=tuple(args), flags=tuple(flags), json=is_json,
                original=line, sub=sub)


def split_command(line: str) -> tuple[str, list[str], str]:
    """``CMD --flag=x rest`` -> ("CMD", ["--flag=x"], "rest")."""
    parts = _WS.split(line.strip(), maxsplit=1)
    cmd = parts[0]
    flags: list[str] = []
    rest = ""
    if len(parts) == 2:
        rest, flags = extract_builder_flags(parts[1])
    return cmd, flags, rest.strip()


def extract_builder_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--name[=value]`` words (quotes and ``\\`` processed); ``--`` ends them."""
    words: list[str] = []
    IN_SPACES, IN_WORD, IN_QUOTE = 0, 1, 2
    phase = IN_SPACES
    word: list[str] = []
    quote = ""
    blank_ok = False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == IN_SPACES:
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = IN_WORD
        if phase in (IN_WORD, IN_QUOTE) and pos == n:
            w = "".join(word)
            if w != "--" and (blank_ok or w):
                words.append(w)
            break
        if phase == IN_WORD:
            if ch.isspace():
                phase = IN_SPACES
                w = "".join(word)
                if w == "--":
                    return line[pos:], words
                if blank_ok or w:
                    words.append(w)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = IN_QUOTE
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
            continue
        if phase == IN_QUOTE:
            if ch == quote:
                phase = IN_WORD
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    phase = IN_WORD
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
    return "", words


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on blanks, keeping quotes and escapes (processed later by the lexer)."""
    words: list[str] = []
    IN_SPACES, IN_WORD, IN_QUOTE = 0, 1, 2
    phase = IN_SPACES
    word: list[str] = []
    quote = ""
    blank_ok = False
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == IN_SPACES:
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            phase = IN_WORD
        if phase in (IN_WORD, IN_QUOTE) and pos == n:
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == IN_WORD:
            if ch.isspace():
                phase = IN_SPACES
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = IN_QUOTE
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if phase == IN_QUOTE:
            if ch == quote:
                phase = IN_WORD
            if ch == escape and quote != "'":
                if pos + 1 == n:
                    phase = IN_WORD
                    pos += 1
                    continue
                pos += 1
                word.append(ch)
                ch = rest[pos]
            word.append(ch)
            pos += 1
    return words


def _parse_ignore(rest: str, escape: str):
    return [], False, None


def _parse_sub_command(rest: str, escape: str):
    if rest == "":
        return [], False, None
    sub = _node_from_line(rest, escape)
    return [sub.cmd, *sub.args], False, sub


def _parse_name_val(rest: str, escape: str, key: str):
    words = parse_words(rest, escape)
    if not words:
        return [], False, None
    if "=" not in words[0]:
        parts = _WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _SyntaxError(f"{key} must have two arguments")
        return [parts[0], parts[1]], False, None
    out: list[str] = []
    for w in words:
        if "=" not in w:
            raise _SyntaxError(f"Syntax error - can't find = in {w!r}. Must be of the form: name=value")
        k, v = w.split("=", 1)
        out += [k, v]
    return out, False, None


def _parse_env(rest: str, escape: str):
    return _parse_name_val(rest, escape, "ENV")


def _parse_label(rest: str, escape: str):
    return _parse_name_val(rest, escape, "LABEL")


def _parse_name_or_name_val(rest: str, escape: str):
    return parse_words(rest, escape), False, None


def _parse_strings_ws(rest: str, escape: str):
    if rest == "":
        return [], False, None
    return _WS.split(rest), False, None


def _parse_string(rest: str, escape: str):
    if rest == "":
        return [], False, None
    return [rest], False, None


class _NotStringArray(_SyntaxError):
    pass


def _parse_json(rest: str) -> list[str] | None:
    r = rest.lstrip()
    if not r.startswith("["):
        return None
    try:
        val = json.loads(r)
    except ValueError:
        return None
    if not isinstance(val, list):
        return None
    if not all(isinstance(x, str) for x in val):
        raise _NotStringArray("when using JSON array syntax, arrays must be comprised of strings only")
    return val


def _parse_maybe_json(rest: str, escape: str):
    if rest == "":
        return [], False, None
    val = _parse_json(rest)
    if val is not None:
        return val, True, None
    return [rest], False, None


def _parse_maybe_json_to_list(rest: str, escape: str):
    val = _parse_json(rest)
    if val is not None:
        return val, True, None
    return _parse_strings_ws(rest, escape)


def _parse_health_config(rest: str, escape: str):
    sep = 0
    while sep < len(rest) and not rest[sep].isspace():
        sep += 1
    nxt = sep
    while nxt < len(rest) and rest[nxt].isspace():
        nxt += 1
    if sep == 0:
        return [], False, None
    typ = rest[:sep]
    args, is_json, _ = _parse_maybe_json(rest[nxt:], escape)
    return [typ, *args], is_json, None


_DISPATCH = {
    "add": _parse_maybe_json_to_list,
    "arg": _parse_name_or_name_val,
    "cmd": _parse_maybe_json,
    "copy": _parse_maybe_json_to_list,
    "entrypoint": _parse_maybe_json,
    "env": _parse_env,
    "expose": _parse_strings_ws,
    "from": _parse_strings_ws,
    "healthcheck": _parse_health_config,
    "label": _parse_label,
    "maintainer": _parse_string,
    "onbuild": _parse_sub_command,
    "run": _parse_maybe_json,
    "shell": _parse_maybe_json,
    "stopsignal": _parse_string,
    "user": _parse_string,
    "volume": _parse_maybe_json_to_list,
    "workdir": _parse_string,
}


# ---------------------------------------------------------------------------
# heredocs

def parse_heredoc(word: str) -> Heredoc | None:
    """``<<EOF``, ``<<-EOF``, ``<<'EOF'``, ``3<<EOF`` -> Heredoc (without content), else None."""
    m = _HEREDOC.match(word)
    if not m:
        return None
    fd = int(m.group(1)) if m.group(1) else 0
    chomp = m.group(2) == "-"
    rest = m.group(3)
    if not rest:
        return None
    lex = Lex("\\", skip_unset_env=True)
    try:
        words = lex.process_words(rest, {})
    except LexError as e:
        raise _SyntaxError(str(e)) from None
    if len(words) != 1:
        return None
    lex.raw_quotes = True
    try:
        raw_words = lex.process_words(rest, {})
    except LexError as e:
        raise _SyntaxError(str(e)) from None
    if len(raw_words) != len(words):
        raise _SyntaxError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    w = words[0]
    wr = raw_words[0]
    expand = (w.count("'") + w.count('"')) == (wr.count("'") + wr.count('"'))
    return Heredoc(name=w, expand=expand, chomp=chomp, fd=fd)


def heredocs_from_line(line: str) -> list[Heredoc]:
    lex = Lex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lex.process_words(line, {})
    except LexError:
        words = []
    out = []
    for w in words:
        h = parse_heredoc(w)
        if h is not None:
            out.append(h)
    return out
