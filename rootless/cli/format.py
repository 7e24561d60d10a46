"""Output formats: tables, ``--format json`` and Go-template ``{{.Field}}``.

The template language is the subset Docker users write on the command line::

    {{.Names}}  {{.Config.Env}}  {{json .}}  {{json .Config}}
    {{index .Labels "key"}}  {{join .Names ","}}  {{lower .Status}}
    {{upper .X}}  {{len .Mounts}}  table {{.ID}}\t{{.Image}}

``table`` prints a header row (the field names, Docker style) and aligns
tab-separated columns.
"""

from __future__ import annotations

import json
import re

from rootless.errors import UsageError

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def _field(obj, path: str):
    if path == ".":
        return obj
    cur = obj
    for part in path.lstrip(".").split("."):
        if not part:
            continue
        if isinstance(cur, dict):
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
        else:
            v = getattr(cur, part, None)
            if v is None and not hasattr(cur, part):
                raise UsageError(f"template: can't evaluate field {part}")
            cur = v
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


def _arg(tok: tuple[str, str], obj):
    kind, w = tok
    if kind == "str":
        return bytes(w, "utf-8").decode("unicode_escape")
    if w.startswith("."):
        return _field(obj, w)
    if w == "$":
        return obj
    if re.fullmatch(r"-?\d+", w):
        return int(w)
    raise UsageError(f"template: unexpected {w!r}")


def _eval(expr: str, obj):
    toks = [("str", m.group(1)) if m.group(1) is not None else ("word", m.group(2)) for m in _TOKEN.finditer(expr)]
    if not toks:
        return ""
    fn = toks[0][1]
    args = toks[1:]
    if fn.startswith(".") or fn == "$":
        return _field(obj, fn) if fn != "$" else obj
    vals = [_arg(t, obj) for t in args]
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
    if fn == "println":
        return " ".join(_to_text(v) for v in vals) + "\n"
    raise UsageError(f'template: function "{fn}" not defined')


def render(template: str, obj) -> str:
    """Render one object with a Go-template subset."""
    out = []
    pos = 0
    for m in _ACTION.finditer(template):
        out.append(template[pos:m.start()])
        v = _eval(m.group(1), obj)
        out.append(v if isinstance(v, str) else _to_text(v))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out).replace("\\t", "\t").replace("\\n", "\n")


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
    if fmt.startswith("table "):
        body = fmt[len("table "):]
        header_names = [_header(m.group(1), headers) for m in re.finditer(r"\{\{\s*\.([\w.]+)\s*\}\}", body)]
        rows = [render(body, i).split("\t") for i in items]
        hdr = header_names if len(header_names) == len(body.replace("\\t", "\t").split("\t")) else []
        return "\n".join(_align(([hdr] if hdr else []) + rows))
    return "\n".join(render(fmt, i) for i in items)
