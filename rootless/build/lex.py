"""Shell-word processing of Dockerfile arguments, as BuildKit's ``shell.Lex``.

Quotes (``'...'`` and ``"..."``), the escape token (``\\`` or the one set by
``# escape=``) and variable references are processed the way BuildKit does
it, not the way a POSIX shell does (no command substitution, no globbing):

    $VAR  ${VAR}                 value, or "" when unset
    ${VAR:-word} ${VAR-word}     word when VAR is unset or empty / unset
    ${VAR:+word} ${VAR+word}     word when VAR is set and not empty / set
    ${VAR:?msg}  ${VAR?msg}      error when VAR is unset or empty / unset
    ${VAR#pat} ${VAR##pat}       remove the shortest / longest matching prefix
    ${VAR%pat} ${VAR%%pat}       remove the shortest / longest matching suffix
    ${VAR/pat/repl} ${VAR//pat/repl}  replace the first / every match

``process_word`` returns the one resulting string (spaces kept),
``process_words`` splits it into words after the substitution, taking
quotes into account (a quoted empty string is dropped, as in BuildKit).

Pure functions; errors raise :class:`LexError` (a ValueError) with
BuildKit's message, which the Dockerfile front end turns into a
BuildError naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class LexError(ValueError):
    pass


class _Words:
    """Word splitting after substitution (BuildKit's wordsStruct)."""

    def __init__(self) -> None:
        self.buf = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.buf:
                self.words.append(self.buf)
                self.buf = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf += ch
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.buf += s
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.buf:
            self.words.append(self.buf)
            self.buf = ""
            self.in_word = False
        return self.words


@dataclass
class Lex:
    """Options as BuildKit's ``shell.Lex``.

    raw_quotes: keep the quote characters in the output;
    raw_escapes: keep the escape characters in the output;
    skip_process_quotes: quotes are ordinary characters;
    skip_unset_env: leave references to unset variables as they are.
    """

    escape_token: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_process_quotes: bool = False
    skip_unset_env: bool = False

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        return _Scan(self, word, env).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        return _Scan(self, word, env).process()[1]

    def process_word_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str], set[str]]:
        """(result, names found in env, names not found)."""
        s = _Scan(self, word, env)
        result = s.process()[0]
        return result, s.matched, s.unmatched


class _Scan:
    def __init__(self, lex: Lex, src: str, env: Mapping[str, str]):
        self.lex = lex
        self.src = src
        self.pos = 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # -- scanner
    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else ""

    def next(self) -> str:
        if self.pos < len(self.src):
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return ""

    def process(self) -> tuple[str, list[str]]:
        try:
            return self.stop_on("", self.raw_escapes)
        except LexError as e:
            raise LexError(f"failed to process {self.src!r}: {e}") from None

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        esc = self.lex.escape_token
        quotes = not self.lex.skip_process_quotes
        while self.pos < len(self.src):
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.get_words()
            if ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif quotes and ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif quotes and ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            else:
                ch = self.next()
                if ch == esc:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == "":
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def single_quote(self) -> str:
        out: list[str] = []
        ch = self.next()
        if self.lex.raw_quotes:
            out.append(ch)
        while True:
            ch = self.next()
            if ch == "":
                raise LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        out: list[str] = []
        ch = self.next()
        if self.lex.raw_quotes:
            out.append(ch)
        esc = self.lex.escape_token
        while True:
            p = self.peek()
            if p == "":
                raise LexError("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                ch = self.next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if p == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt == "":
                    continue
                if nxt in ('"', "$", esc):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while self.pos < len(self.src):
            ch = self.peek()
            if not out and ch.isdigit():
                while self.peek() and self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdigit() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    def dollar(self) -> str:
        self.next()  # '$'
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "$" + name
            return value
        self.next()  # '{'
        p = self.peek()
        if p == "":
            raise LexError("syntax error: missing '}'")
        if p in "{}:":
            raise LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        chs = ch
        null_is_unset = False
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == "":
            raise LexError("syntax error: missing '}'")
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            chs += ch
            if ch == "":
                raise LexError("syntax error: missing '}'")
        elif ch == "/":
            return self._replace(name)
        if ch not in "+-?#%":
            raise LexError(f"unsupported modifier ({chs}) in substitution")
        raw = ch in "#%"
        if null_is_unset and raw:
            raise LexError(f"unsupported modifier ({chs}) in substitution")
        try:
            word, _ = self.stop_on("}", raw)
        except LexError:
            if self.peek() == "":
                raise LexError("syntax error: missing '}'") from None
            raise
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${" + name + chs + word + "}"
        if ch == "-":
            if not is_set or (null_is_unset and value == ""):
                return word
            return value
        if ch == "+":
            if not is_set or (null_is_unset and value == ""):
                return ""
            return word
        if ch == "?":
            if not is_set:
                raise LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        # '#' / '%': shortest match, doubled: longest
        greedy = False
        if word and word[0] == ch:
            greedy = True
            word = word[1:]
        if ch == "%":
            return _trim_suffix(word, value, greedy)
        return _trim_prefix(word, value, greedy)

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.stop_on("/", True)
        except LexError:
            if self.peek() == "":
                raise LexError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.stop_on("}", True)
        except LexError:
            if self.peek() == "":
                raise LexError("syntax error: missing '}'") from None
            raise
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${%s/%s/%s}" % (name, pattern, replacement)
        rx = shell_pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return rx.sub(lambda m: replacement, value)
        m = rx.search(value)
        if m:
            return value[:m.start()] + replacement + value[m.end():]
        return value


def shell_pattern_regex(pattern: str, greedy: bool, anchored: bool) -> "re.Pattern[str]":
    """``*`` and ``?`` wildcards (no bracket expressions) -> a regex."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            nxt = pattern[i] if i < n else ""
            if nxt in ("}", "/"):
                continue
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise LexError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            out.append("\\" + nxt)
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out), re.S)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = shell_pattern_regex(pattern, greedy, True).search(value)
    return value[m.end():] if m else value


def _reverse_pattern(pattern: str) -> str:
    # reverse, keeping each escape before the character it escapes
    toks: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            toks.append(pattern[i:i + 2])
            i += 2
        else:
            toks.append(pattern[i])
            i += 1
    return "".join(reversed(toks))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]
