"""Output formats: tables, ``--format json`` and Go-template ``{{.Field}}``.

The template language is the subset Docker users write on the command line::

    {{.Names}}  {{.Config.Env}}  {{json .}}  {{json .Config}}
    {{index .Labels "key"}}  {{join .Names ","}}  {{lower .Status}}
    {{upper .X}}  {{len .Mounts}}  table {{.ID}}\t{{.Image}}

``table`` prints a header row (the field names, Docker style) and aligns
tab-separated columns. ``{{- x -}}`` trims, ``{{/* */}}`` is a comment. As
Go's parser, a template that does not parse (an unclosed or empty action, an
unknown function) is an error (125) before anything is rendered, and a field
of something that is not an object is one when rendered.
"""

from __future__ import annotations

import json
import re

from rootless.errors import UsageError

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|`([^`]*)`|(\S+)')
_FUNCS = ("json", "index", "join", "lower", "upper", "len", "title", "println")
_SPACE = " \t\r\n"


def _syntax(msg: str) -> UsageError:
    return UsageError(f"template parsing error: {msg}",
                      hint="write Go template actions as {{.Field}}, e.g. --format '{{.ID}}\\t{{json .}}'; "
                           "functions: " + ", ".join(_FUNCS))


def _field(obj, path: str):
    if path == ".":
        return obj
    cur = obj
    for part in path.lstrip(".").split("."):
        if not part:
            continue
        if not isinstance(cur, dict):
            kind = "null" if cur is None else type(cur).__name__
            raise UsageError(f"template: can't evaluate field {part} in a {kind} value",
                             hint="only objects have fields; see the fields with --format '{{json .}}'")
        if part in cur:
            cur = cur[part]
            continue
        # case-insensitive fallback (ID vs Id)
        for k in cur:
            if isinstance(k, str) and k.lower() == part.lower():
                cur = cur[k]
                break
        else:
            raise UsageError(f"template: can't evaluate field {part}",
                             hint="fields: " + ", ".join(sorted(str(k) for k in cur)[:40]))
    return cur


def _to_text(v) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + " ".join(_to_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_to_text(x)}" for k, x in sorted(v.items())) + "]"
    return str(v)


def _tokens(expr: str) -> list[tuple[str, str]]:
    """An action's words: ("str", text) for quoted strings, ("word", w) otherwise; checked."""
    toks = []
    for m in _TOKEN.finditer(expr):
        if m.group(1) is not None:
            toks.append(("str", bytes(m.group(1), "utf-8").decode("unicode_escape")))
        elif m.group(2) is not None:
            toks.append(("str", m.group(2)))
        else:
            w = m.group(3)
            if w[0] in "\"`":
                raise _syntax(f"unterminated quoted string in {{{{{expr}}}}}")
            toks.append(("word", w))
    if not toks:
        raise _syntax("missing value for command in {{}}")
    kind, fn = toks[0]
    if kind == "word" and (fn.startswith(".") or fn == "$") and len(toks) > 1:
        raise _syntax(f"can't give argument to non-function {fn} in {{{{{expr}}}}}")
    if kind == "word" and not (fn.startswith(".") or fn == "$" or fn in _FUNCS or re.fullmatch(r"-?\d+", fn)):
        if fn in ("if", "else", "end", "range", "with", "define", "template", "block", "printf"):
            raise UsageError(f"template: {fn!r} is not supported by rootless's templates",
                             hint="use fields and the functions " + ", ".join(_FUNCS))
        raise _syntax(f'function "{fn}" not defined')
    if kind == "str" and len(toks) > 1:
        raise _syntax(f"can't give argument to non-function in {{{{{expr}}}}}")
    for k, w in toks[1:]:
        if k == "word" and not (w.startswith(".") or w == "$" or re.fullmatch(r"-?\d+", w)):
            raise _syntax(f"unexpected {w!r} in {{{{{expr}}}}}")
    return toks


def parse(template: str) -> list[tuple[str, object]]:
    """A template as [("text", s) | ("action", tokens)]; UsageError (125) on a syntax error
    (an unclosed or empty action, an unknown function), as Go's template parser."""
    segs: list[tuple[str, object]] = []
    pos, n = 0, len(template)
    while True:
        i = template.find("{{", pos)
        if i < 0:
            segs.append(("text", template[pos:]))
            return segs
        text = template[pos:i]
        # the action ends at the first "}}" outside a quoted string
        j, quote = i + 2, None
        while j < n:
            c = template[j]
            if quote:
                if c == "\\" and quote == '"':
                    j += 1
                elif c == quote:
                    quote = None
            elif c in "\"`":
                quote = c
            elif template.startswith("}}", j):
                break
            j += 1
        if j >= n:
            raise _syntax("unterminated quoted string" if quote else "unclosed action")
        inner = template[i + 2:j]
        pos = j + 2
        if len(inner) >= 2 and inner[0] == "-" and inner[1] in _SPACE:
            text = text.rstrip(_SPACE)
            inner = inner[2:]
        if len(inner) >= 2 and inner[-1] == "-" and inner[-2] in _SPACE:
            inner = inner[:-2]
            while pos < n and template[pos] in _SPACE:
                pos += 1
        segs.append(("text", text))
        expr = inner.strip(_SPACE)
        if expr.startswith("/*"):
            if not expr.endswith("*/"):
                raise _syntax("unclosed comment")
            continue
        segs.append(("action", _tokens(expr)))


def check(template: str) -> None:
    """Raise UsageError when ``template`` does not parse (before there is anything to render)."""
    parse(template)


def _arg(tok: tuple[str, str], obj):
    kind, w = tok
    if kind == "str":
        return w
    if w.startswith("."):
        return _field(obj, w)
    if w == "$":
        return obj
    return int(w)


def _eval(toks: list[tuple[str, str]], obj):
    kind, fn = toks[0]
    if kind == "str":
        return fn
    if fn.startswith(".") or fn == "$" or re.fullmatch(r"-?\d+", fn):
        return _arg(toks[0], obj)
    vals = [_arg(t, obj) for t in toks[1:]]
    if fn == "json":
        return json.dumps(vals[0] if vals else obj, separators=(",", ":"))
    if fn == "index":
        cur = vals[0]
        for k in vals[1:]:
            try:
                cur = cur[k]
            except (KeyError, IndexError, TypeError):
                return ""
        return cur
    if fn == "join":
        return vals[1].join(str(x) for x in (vals[0] or [])) if len(vals) == 2 else ""
    if fn == "lower":
        return _to_text(vals[0]).lower()
    if fn == "upper":
        return _to_text(vals[0]).upper()
    if fn == "len":
        return len(vals[0] or [])
    if fn == "title":
        return _to_text(vals[0]).title()
    return " ".join(_to_text(v) for v in vals) + "\n"  # println


def render(template: str, obj) -> str:
    """Render one object with a Go-template subset (``\\t``/``\\n`` in the text are tab/newline)."""
    out = []
    for kind, x in parse(template):
        if kind == "text":
            out.append(x.replace("\\t", "\t").replace("\\n", "\n"))
        else:
            v = _eval(x, obj)
            out.append(v if isinstance(v, str) else _to_text(v))
    return "".join(out)


def _align(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    n = max(len(r) for r in rows)
    widths = [0] * n
    for r in rows:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(c))
    lines = []
    for r in rows:
        cells = [c.ljust(widths[i] + 3) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells).rstrip())
    return lines


def table(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join(_align([headers] + rows))


# header of a field in `--format "table ..."` where it is not the field's name split at capitals
_HEADERS = {"RunningFor": "CREATED", "CreatedSince": "CREATED", "LocalVolumes": "LOCAL VOLUMES"}


def _header(field: str, overrides: dict[str, str] | None) -> str:
    name = field.split(".")[-1]
    if overrides and name in overrides:
        return overrides[name]
    if name in _HEADERS:
        return _HEADERS[name]
    if name.isupper():
        return name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).upper()


def output(items: list, fmt: str | None, default_headers: list[str], default_row,
           quiet_field: str | None = None, quiet: bool = False, headers: dict[str, str] | None = None) -> str:
    """Format a listing the way ``docker ps/images/volume ls`` do.

    ``items`` are JSON-able dicts; ``default_row(item) -> list[str]``; ``headers`` names
    the columns of ``table`` templates where Docker does (``{"ID": "CONTAINER ID"}``).
    """
    if quiet and quiet_field:
        return "\n".join(str(i[quiet_field]) for i in items)
    if fmt is None or fmt == "table":
        return table(default_headers, [default_row(i) for i in items])
    if fmt == "json":
        return json.dumps(items, indent=4)
    check(fmt)  # a bad template is an error even when there is nothing to list
    if fmt.startswith("table "):
        body = fmt[len("table "):]
        header_names = [_header(m.group(1), headers) for m in re.finditer(r"\{\{\s*\.([\w.]+)\s*\}\}", body)]
        rows = [render(body, i).split("\t") for i in items]
        hdr = header_names if len(header_names) == len(body.replace("\\t", "\t").split("\t")) else []
        return "\n".join(_align(([hdr] if hdr else []) + rows))
    return "\n".join(render(fmt, i) for i in items)
