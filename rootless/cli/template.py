"""Go's text/template for ``--format``, with the functions Docker adds (pure).

What Docker users write on the command line::

    {{.Names}}  {{.Config.Env}}  {{json .}}  {{index .Config.Labels "k"}}  {{.Label "k"}}
    {{range .Mounts}}{{.Source}} {{end}}   {{range $k, $v := .NetworkSettings.Networks}}{{$v.IPAddress}}{{end}}
    {{if .State.Running}}up{{else if .State.Restarting}}again{{else}}down{{end}}
    {{with .State.Health}}{{.Status}}{{else}}none{{end}}   {{$n := len .Mounts}}{{$n}}
    {{.Name | upper | printf "%-10s"}}   {{- trims the space before, and after -}}   {{/* comment */}}

Actions: pipelines (``|`` passes the value as the last argument), variables
(``$x := ...``, ``$x = ...``, ``$``), ``if``/``else if``/``range``/``with``/
``else``/``end``, ``break``/``continue``, parenthesised pipelines. Functions:
Go's (and or not len index slice print printf println eq ne lt le gt ge) and
Docker's (json split join title lower upper pad truncate). ``methods`` gives
the top object's methods, e.g. ps's ``{{.Label "k"}}``. Not supported:
define/template/block. Errors are UsageError ("template: ...").

``\\t`` and ``\\n`` written in the text (outside actions) become a tab and a
newline, as Docker's formatter does.
"""

from __future__ import annotations

import json
import re

from rootless.errors import UsageError

_MISSING = object()


class TemplateError(UsageError):
    pass


def _fail(msg: str, hint: str | None = None):
    raise TemplateError(f"template: {msg}", hint=hint)


# ---------------------------------------------------------------------------
# lexing: text, comments and actions (a list of tokens each)

class Tok:
    __slots__ = ("kind", "value", "glued")

    def __init__(self, kind: str, value, glued: bool):
        self.kind = kind          # field var dot str num bool nil ident kw ( ) | , := =
        self.value = value
        self.glued = glued        # no space before it: ``(x).Field``, ``$v.Field``

    def __repr__(self) -> str:
        return f"Tok({self.kind}, {self.value!r})"


KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|"
                     r"(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)
_SIMPLE_ESC = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\",
               '"': '"', "'": "'"}


def _unquote(body: str) -> str:
    def one(m):
        e = m.group(1)
        if e[0] in "xuU":
            return chr(int(e[1:], 16))
        if e[0].isdigit():
            return chr(int(e, 8))
        if e in _SIMPLE_ESC:
            return _SIMPLE_ESC[e]
        _fail(f"unknown escape sequence \\{e}")
    return _ESCAPE.sub(one, body)


def _lex(src: str) -> list:
    """[("text", str) | ("action", [Tok])] with the trim markers applied to the text."""
    items: list = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            if text:
                items.append(("text", text))
            return items
        i = start + 2
        if src.startswith("- ", i) or src.startswith("-\t", i) or src.startswith("-\n", i) or \
                src.startswith("-\r", i):
            text = text.rstrip(" \t\r\n")
            i += 1
        if text:
            items.append(("text", text))
        toks, pos, trim_next, comment = _lex_action(src, i)
        if not comment:
            items.append(("action", toks))


def _lex_action(src: str, i: int) -> tuple[list, int, bool, bool]:
    """Tokens of the action starting at ``i`` (after ``{{`` and a trim marker); returns
    (tokens, position after ``}}``, trim the next text, was a comment)."""
    n = len(src)
    j = i
    while j < n and src[j] in " \t\r\n":
        j += 1
    if src.startswith("/*", j):
        end = src.find("*/", j + 2)
        if end < 0:
            _fail("unclosed comment")
        k = end + 2
        while k < n and src[k] in " \t\r\n":
            k += 1
        if src.startswith("-}}", k) and k > end + 2:
            return [], k + 3, True, True
        if src.startswith("}}", end + 2):
            return [], end + 4, False, True
        _fail("comment ends before closing delimiter")
    toks: list[Tok] = []
    glued = False
    while True:
        if i >= n:
            _fail("unclosed action", hint="close it with }}")
        c = src[i]
        if c in " \t\r\n":
            i += 1
            glued = False
            if src.startswith("-}}", i):
                return toks, i + 3, True, False
            continue
        if src.startswith("}}", i):
            return toks, i + 2, False, False
        if c == '"':
            k = i + 1
            while k < n and src[k] != '"':
                if src[k] == "\\":
                    k += 1
                elif src[k] == "\n":
                    _fail("newline in a quoted string")
                k += 1
            if k >= n:
                _fail("unterminated quoted string")
            toks.append(Tok("str", _unquote(src[i + 1:k]), glued))
            i = k + 1
        elif c == "`":
            k = src.find("`", i + 1)
            if k < 0:
                _fail("unterminated raw quoted string")
            toks.append(Tok("str", src[i + 1:k], glued))
            i = k + 1
        elif c == "'":
            k = i + 1
            while k < n and src[k] != "'":
                k += 2 if src[k] == "\\" else 1
            ch = _unquote(src[i + 1:k])
            if len(ch) != 1:
                _fail(f"bad character constant {src[i:k + 1]}")
            toks.append(Tok("num", ord(ch), glued))
            i = k + 1
        elif c in "()|,":
            toks.append(Tok(c, c, glued))
            i += 1
        elif src.startswith(":=", i):
            toks.append(Tok(":=", ":=", glued))
            i += 2
        elif c == "=":
            toks.append(Tok("=", "=", glued))
            i += 1
        elif c == "$":
            m = _IDENT.match(src, i + 1)
            name = "$" + (m.group(0) if m else "")
            i += len(name)
            chain, i = _chain(src, i)
            toks.append(Tok("var", (name, chain), glued))
        elif c == "." and not (i + 1 < n and src[i + 1].isdigit()):
            chain, k = _chain(src, i)
            toks.append(Tok("field", chain, glued) if chain else Tok("dot", ".", glued))
            i = k if chain else i + 1
        elif (m := _NUMBER.match(src, i)) and (c.isdigit() or c == "." or
                                               (c in "+-" and i + 1 < n and (src[i + 1].isdigit() or
                                                                             src[i + 1] == "."))):
            toks.append(Tok("num", _number(m.group(0)), glued))
            i = m.end()
        elif m := _IDENT.match(src, i):
            w = m.group(0)
            kind = "kw" if w in KEYWORDS else "bool" if w in ("true", "false") else "nil" if w == "nil" else "ident"
            toks.append(Tok(kind, (w == "true") if kind == "bool" else w, glued))
            i = m.end()
        else:
            _fail(f"unexpected {c!r} in action")
        glued = True


def _chain(src: str, i: int) -> tuple[list[str], int]:
    """``.A.B`` at ``i`` -> (["A", "B"], end)."""
    out = []
    while i < len(src) and src[i] == ".":
        m = _IDENT.match(src, i + 1)
        if not m:
            break
        out.append(m.group(0))
        i = m.end()
    return out, i


def _number(text: str):
    t = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        if re.fullmatch(r"[+-]?0[xXbBoO].*", t):
            return int(t, 0)
        return float(t)
    except ValueError:
        _fail(f"bad number syntax: {text}")


# ---------------------------------------------------------------------------
# parsing: a tree of nodes

class Pipe:
    def __init__(self, decl: list[str], assign: bool, cmds: list[list]):
        self.decl = decl            # variables declared (:=) or assigned (=)
        self.assign = assign
        self.cmds = cmds            # each: a list of operands (first: function name or value)


class Node:
    def __init__(self, kind: str, **kw):
        self.kind = kind            # text action if range with break continue
        self.__dict__.update(kw)


class _Parser:
    def __init__(self, items: list):
        self.items = items
        self.pos = 0

    def parse_list(self, inside: str = "") -> tuple[list, str, list]:
        """Nodes up to an ``end`` / ``else`` (returned with the rest of that action's tokens)."""
        nodes: list = []
        while self.pos < len(self.items):
            kind, val = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(Node("text", text=val.replace("\\t", "\t").replace("\\n", "\n")))
                continue
            toks = val
            if not toks:
                _fail("missing value for command")
            head = toks[0]
            if head.kind == "kw":
                w = head.value
                if w in ("end", "else"):
                    if not inside:
                        _fail(f"unexpected {{{{{w}}}}}")
                    if w == "end" and len(toks) > 1:
                        _fail("unexpected tokens after end")
                    return nodes, w, toks[1:]
                if w in ("if", "range", "with"):
                    nodes.append(self.parse_control(w, toks[1:]))
                    continue
                if w in ("break", "continue"):
                    if len(toks) > 1:
                        _fail(f"unexpected tokens after {w}")
                    nodes.append(Node(w))
                    continue
                _fail(f"{{{{{w}}}}} is not supported", hint="use if, range, with and the functions")
            nodes.append(Node("action", pipe=self.parse_pipe(toks, decl_ok=True)))
        if inside:
            _fail(f"unexpected EOF: {{{{{inside}}}}} without {{{{end}}}}")
        return nodes, "", []

    def parse_control(self, w: str, toks: list) -> Node:
        if not toks:
            _fail(f"missing value for {w}")
        pipe = self.parse_pipe(toks, decl_ok=True, two_vars=(w == "range"))
        body, term, rest = self.parse_list(w)
        other: list = []
        if term == "else":
            if rest and rest[0].kind == "kw" and rest[0].value in ("if", "with") and w != "range":
                other = [self.parse_control(rest[0].value, rest[1:])]    # consumes the shared end
            else:
                if rest:
                    _fail("unexpected tokens after else")
                other, term2, rest2 = self.parse_list(w)
                if term2 != "end":
                    _fail(f"expected end; found {term2}")
        return Node(w, pipe=pipe, body=body, other=other)

    def parse_pipe(self, toks: list, decl_ok: bool = False, two_vars: bool = False) -> Pipe:
        decl: list[str] = []
        assign = False
        i = 0
        if decl_ok and toks and toks[0].kind == "var" and not toks[0].value[1]:
            # $x := / $x = / $k, $v :=
            if len(toks) > 1 and toks[1].kind in (":=", "="):
                decl, assign, i = [toks[0].value[0]], toks[1].kind == "=", 2
            elif (two_vars and len(toks) > 3 and toks[1].kind == "," and toks[2].kind == "var"
                  and not toks[2].value[1] and toks[3].kind == ":="):
                decl, i = [toks[0].value[0], toks[2].value[0]], 4
        cmds, i = self.parse_cmds(toks, i)
        if i != len(toks):
            _fail(f"unexpected {toks[i].value!r} in operand")
        if not cmds:
            _fail("missing value for command")
        return Pipe(decl, assign, cmds)

    def parse_cmds(self, toks: list, i: int) -> tuple[list, int]:
        cmds: list = []
        cur: list = []
        while i < len(toks):
            t = toks[i]
            if t.kind == ")":
                break
            if t.kind == "|":
                if not cur:
                    _fail("missing command before |")
                cmds.append(cur)
                cur = []
                i += 1
                continue
            if t.kind == "(":
                sub, i = self.parse_cmds(toks, i + 1)
                if i >= len(toks) or toks[i].kind != ")":
                    _fail("unclosed left paren")
                i += 1
                chain: list[str] = []
                while i < len(toks) and toks[i].kind == "field" and toks[i].glued:
                    chain += toks[i].value
                    i += 1
                if not sub:
                    _fail("missing pipeline in parentheses")
                cur.append(("pipe", Pipe([], False, sub), chain))
                continue
            if t.kind in (":=", "=", ",", "kw"):
                _fail(f"unexpected {t.value!r} in command")
            if t.kind == "ident" and t.value not in FUNCS:
                _fail(f'function "{t.value}" not defined')   # as Go's parser: before anything runs
            cur.append((t.kind, t.value, None))
            i += 1
        if cur:
            cmds.append(cur)
        elif cmds:
            _fail("missing command after |")
        return cmds, i


def parse(src: str) -> list:
    return _Parser(_lex(src)).parse_list()[0]


# ---------------------------------------------------------------------------
# values as Go prints them (fmt %v)

def to_text(v) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e21:
            return str(int(v))
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(to_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{to_text(x)}" for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))) + "]"
    return str(v)


def truth(v) -> bool:
    """Go's: false, 0, nil, and empty strings, lists and maps are false."""
    if v is None:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d*|\*))?([a-zA-Z%])")


def sprintf(fmt: str, args: list) -> str:
    """Go's fmt.Sprintf for the verbs templates use (v s d q x X o b f e g t c)."""
    out = []
    pos = 0
    ai = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if width == "*":
            width = str(args[ai]) if ai < len(args) else ""
            ai += 1
        if prec == "*":
            prec = str(args[ai]) if ai < len(args) else ""
            ai += 1
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(args[ai], flags, width or "", prec, verb))
        ai += 1
    out.append(fmt[pos:])
    if ai < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_go_type(a)}={to_text(a)}" for a in args[ai:]) + ")")
    return "".join(out)


def _go_type(v) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "[]interface {}",
            dict: "map[string]interface {}"}.get(type(v), type(v).__name__)


def _format_one(a, flags: str, width: str, prec, verb: str) -> str:
    pyflags = "".join(f for f in flags if f in "-+ 0#")
    p = f".{prec or 0}" if prec is not None else ""
    if verb in "vs":
        s = to_text(a)
        if prec is not None and verb == "s":
            s = s[:int(prec or 0)]
        return _pad(s, flags, width)
    if verb == "q":
        s = json.dumps(a if isinstance(a, str) else to_text(a), ensure_ascii=False)
        return _pad(s, flags, width)
    if verb == "t":
        return _pad(to_text(a), flags, width) if isinstance(a, bool) else f"%!t({_go_type(a)}={to_text(a)})"
    if isinstance(a, bool) or a is None:
        return f"%!{verb}({_go_type(a)}={to_text(a)})"
    try:
        if verb in "dxXob" and isinstance(a, str) and verb in "xX":
            s = a.encode().hex()
            return _pad(s.upper() if verb == "X" else s, flags, width)
        if verb in "dxXob":
            if isinstance(a, float) and a.is_integer():
                a = int(a)
            if not isinstance(a, int):
                raise TypeError
            return ("%" + pyflags + width + ("d" if verb == "d" else verb)) % a if verb != "b" else \
                _pad(format(a, "b"), flags, width)
        if verb in "feEgGF":
            return ("%" + pyflags + width + p + verb.replace("F", "f")) % float(a)
        if verb == "c":
            return _pad(chr(int(a)), flags, width)
    except (TypeError, ValueError):
        pass
    return f"%!{verb}({_go_type(a)}={to_text(a)})"


def _pad(s: str, flags: str, width: str) -> str:
    if not width:
        return s
    w = int(width)
    return s.ljust(w) if "-" in flags else s.rjust(w)


def _sprint(args: list) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += to_text(a)
    return out


# ---------------------------------------------------------------------------
# functions

def _json(v) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, default=str)


def _len(v):
    if v is None:
        return 0
    if isinstance(v, (str, list, tuple, dict)):
        return len(v)
    _fail(f"len of type {_go_type(v)}")


def _index(v, *keys):
    cur = v
    for k in keys:
        if isinstance(cur, dict):
            cur = cur.get(k)
        elif isinstance(cur, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                _fail(f"cannot index slice/array with type {_go_type(k)}")
            if not 0 <= k < len(cur):
                _fail(f"index out of range: {k}")
            cur = cur[k]
        elif cur is None:
            return None
        else:
            _fail(f"can't index item of type {_go_type(cur)}")
    return cur


def _slice(v, *idx):
    if not isinstance(v, (str, list, tuple)):
        _fail(f"can't slice item of type {_go_type(v)}")
    if len(idx) > 2:
        _fail("too many slice indexes")
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else len(v)
    if not (0 <= lo <= hi <= len(v)):
        _fail(f"slice index out of range: {lo}:{hi}")
    return v[lo:hi]


def _cmp(op):
    def fn(a, *bs):
        if op == "eq":
            if not bs:
                _fail("missing argument for comparison")
            return any(_eq(a, b) for b in bs)
        if len(bs) != 1:
            _fail(f"wrong number of args for {op}: want 2 got {len(bs) + 1}")
        b = bs[0]
        if op == "ne":
            return not _eq(a, b)
        if isinstance(a, bool) or isinstance(b, bool) or type(a) is not type(b) and not (
                isinstance(a, (int, float)) and isinstance(b, (int, float))):
            _fail(f"incompatible types for comparison: {_go_type(a)} and {_go_type(b)}")
        return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
    return fn


def _eq(a, b) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _and(*args):
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args):
    for a in args:
        if truth(a):
            return a
    return args[-1]


def _str(v) -> str:
    return v if isinstance(v, str) else to_text(v)


def _join(items, sep) -> str:
    if not isinstance(items, (list, tuple)):
        _fail(f"join: wrong type for value; expected []string; got {_go_type(items)}")
    return _str(sep).join(_str(x) for x in items)


def _pad_fn(s, prefix, suffix) -> str:
    s = _str(s)
    return s if not s else " " * int(prefix) + s + " " * int(suffix)


def _truncate(s, n) -> str:
    s = _str(s)
    return s if len(s) < int(n) else s[:int(n)]


def _title(s) -> str:
    # strings.Title: upper-case the first letter of each word, keep the rest
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), _str(s))


FUNCS = {
    "and": _and, "or": _or, "not": lambda a: not truth(a), "len": _len, "index": _index, "slice": _slice,
    "print": lambda *a: _sprint(list(a)), "println": lambda *a: " ".join(to_text(x) for x in a) + "\n",
    "printf": lambda f, *a: sprintf(_str(f), list(a)),
    "eq": _cmp("eq"), "ne": _cmp("ne"), "lt": _cmp("lt"), "le": _cmp("le"), "gt": _cmp("gt"), "ge": _cmp("ge"),
    # Docker's (cli/templates)
    "json": _json, "split": lambda s, sep: _str(s).split(_str(sep)) if sep != "" else list(_str(s)),
    "join": _join, "title": _title, "lower": lambda s: _str(s).lower(), "upper": lambda s: _str(s).upper(),
    "pad": _pad_fn, "truncate": _truncate,
}
_ARITY = {"not": 1, "len": 1, "json": 1, "split": 2, "join": 2, "title": 1, "lower": 1, "upper": 1, "pad": 3,
          "truncate": 2}


# ---------------------------------------------------------------------------
# execution

class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Exec:
    def __init__(self, root, methods: dict | None):
        self.root = root
        self.methods = methods or {}
        self.vars: list[list] = [["$", root]]
        self.out: list[str] = []

    def run(self, nodes: list, dot, in_range: bool = False) -> None:
        for n in nodes:
            k = n.kind
            if k == "text":
                self.out.append(n.text)
            elif k == "action":
                v = self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    self.out.append(v if isinstance(v, str) else to_text(v))
            elif k in ("if", "with"):
                mark = len(self.vars)
                v = self.pipe(n.pipe, dot)
                try:
                    if truth(v):
                        self.run(n.body, v if k == "with" else dot, in_range)
                    else:
                        self.run(n.other, dot, in_range)
                finally:
                    del self.vars[mark:]
            elif k == "range":
                self.range(n, dot)
            elif k == "break":
                if not in_range:
                    _fail("{{break}} outside {{range}}")
                raise _Break
            elif k == "continue":
                if not in_range:
                    _fail("{{continue}} outside {{range}}")
                raise _Continue

    def range(self, n, dot) -> None:
        mark = len(self.vars)
        pipe = n.pipe
        v = self.pipe(Pipe([], False, pipe.cmds), dot)
        if v is None:
            items = []
        elif isinstance(v, dict):
            items = [(k, v[k]) for k in sorted(v, key=str)]
        elif isinstance(v, (list, tuple)):
            items = list(enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            items = [(i, i) for i in range(v)]
        else:
            _fail(f"range can't iterate over {to_text(v)}")
        try:
            if not items:
                self.run(n.other, dot)
                return
            for key, val in items:
                del self.vars[mark:]
                if len(pipe.decl) == 1:
                    self.vars.append([pipe.decl[0], val])
                elif len(pipe.decl) == 2:
                    self.vars.append([pipe.decl[0], key])
                    self.vars.append([pipe.decl[1], val])
                try:
                    self.run(n.body, val, in_range=True)
                except _Continue:
                    continue
                except _Break:
                    break
        finally:
            del self.vars[mark:]

    def var(self, name: str):
        for k, v in reversed(self.vars):
            if k == name:
                return v
        _fail(f"undefined variable: {name}")

    def pipe(self, p: Pipe, dot):
        val = _MISSING
        for cmd in p.cmds:
            val = self.command(cmd, dot, val)
        if p.decl:
            if p.assign:
                for entry in reversed(self.vars):
                    if entry[0] == p.decl[0]:
                        entry[1] = val
                        break
                else:
                    _fail(f"undefined variable: {p.decl[0]}")
            else:
                self.vars.append([p.decl[0], val])
        return val

    def command(self, cmd: list, dot, final):
        kind, value, chain = cmd[0]
        rest = cmd[1:]
        if kind == "ident":
            fn = FUNCS.get(value)
            if fn is None:
                _fail(f'function "{value}" not defined')
            args = [self.arg(a, dot) for a in rest] + ([] if final is _MISSING else [final])
            want = _ARITY.get(value)
            if want is not None and len(args) != want:
                _fail(f"wrong number of args for {value}: want {want} got {len(args)}")
            if value in ("and", "or", "index", "slice", "printf", "eq", "ne", "lt", "le", "gt", "ge") and not args:
                _fail(f"wrong number of args for {value}")
            try:
                return fn(*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, AttributeError) as e:
                _fail(f"error calling {value}: {e}")
        args = [self.arg(a, dot) for a in rest] + ([] if final is _MISSING else [final])
        if kind == "field":
            return self.fields(dot, value, args, top=dot is self.root)
        if kind == "var":
            name, fchain = value
            return self.fields(self.var(name), fchain, args, top=name == "$") if fchain else \
                self._no_args(self.var(name), args, name)
        if kind == "pipe":
            v = self.pipe(value, dot)
            return self.fields(v, chain, args) if chain else self._no_args(v, args, "(...)")
        return self._no_args(self.arg(cmd[0], dot), args, str(value))

    @staticmethod
    def _no_args(v, args, what: str):
        if args:
            _fail(f"can't give argument to non-function {what}")
        return v

    def arg(self, a, dot):
        kind, value, chain = a
        if kind in ("str", "num", "bool"):
            return value
        if kind == "nil":
            return None
        if kind == "dot":
            return dot
        if kind == "field":
            return self.fields(dot, value, [], top=dot is self.root)
        if kind == "var":
            name, fchain = value
            return self.fields(self.var(name), fchain, [], top=name == "$") if fchain else self.var(name)
        if kind == "pipe":
            v = self.pipe(value, dot)
            return self.fields(v, chain, []) if chain else v
        if kind == "ident":
            if value in FUNCS:
                return self.command([a], dot, _MISSING)
            _fail(f'function "{value}" not defined')
        _fail(f"unexpected {value!r}")

    def fields(self, obj, chain: list[str], args: list, top: bool = False):
        cur = obj
        for i, name in enumerate(chain):
            last = i == len(chain) - 1
            receiver_top = top and i == 0
            if receiver_top and name in self.methods and (last and args or not _has_field(cur, name)):
                cur = self.methods[name](cur, *(args if last else []))
                if last:
                    return cur
                continue
            if last and args:
                _fail(f"can't give argument to non-function .{name}")
            cur = _field(cur, name)
        return cur


def _has_field(obj, name: str) -> bool:
    return isinstance(obj, dict) and (name in obj or any(isinstance(k, str) and k.lower() == name.lower()
                                                         for k in obj))


def _field(cur, name: str):
    if cur is None:
        return None       # (Go: nil; printed "<no value>")
    if isinstance(cur, dict):
        if name in cur:
            return cur[name]
        for k in cur:        # case-insensitive fallback (ID vs Id)
            if isinstance(k, str) and k.lower() == name.lower():
                return cur[k]
        _fail(f"can't evaluate field {name}", hint="fields: " + ", ".join(sorted(str(k) for k in cur)[:40]))
    if isinstance(cur, (list, tuple, str, int, float, bool)):
        _fail(f"can't evaluate field {name} in type {_go_type(cur)}")
    if hasattr(cur, name):
        return getattr(cur, name)
    _fail(f"can't evaluate field {name}")


_CACHE: dict[str, list] = {}


def render(src: str, obj, methods: dict | None = None) -> str:
    """Execute template ``src`` on ``obj`` (JSON-like data); ``methods``: name -> fn(obj, *args)
    for the top object (``{{.Label "k"}}``)."""
    tree = _CACHE.get(src)
    if tree is None:
        tree = _CACHE[src] = parse(src)
    ex = _Exec(obj, methods)
    ex.run(tree, obj)
    return "".join(ex.out)
