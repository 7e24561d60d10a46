"""Output formats: tables, ``--format json`` and Go templates.

Every ``--format`` goes through :func:`render` (Go's text/template with
Docker's functions: rootless.cli.template, imported only when a template is
used)::

    {{.Names}}  {{json .}}  {{index .Labels "key"}}  {{range .Mounts}}{{.Source}} {{end}}
    {{if .State.Running}}up{{else}}down{{end}}  table {{.ID}}\t{{.Image}}

``table`` prints a header row (the field names, Docker style) and aligns
tab-separated columns. A template that does not parse is an error (125)
before anything is rendered, as with Go's parser.
"""

from __future__ import annotations

import json
import re


def render(template: str, obj, methods: dict | None = None) -> str:
    """Render one object with a Go template; ``methods``: the object's methods (ps's ``.Label``)."""
    from rootless.cli.template import render as go_render

    return go_render(template, obj, methods)


def check(template: str) -> None:
    """Raise UsageError (125) when ``template`` does not parse, as Go's parser: an unclosed or
    empty action, an unknown function... (before there is anything to render)."""
    from rootless.cli.template import parse

    parse(template)


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
           quiet_field: str | None = None, quiet: bool = False, headers: dict[str, str] | None = None,
           methods: dict | None = None) -> str:
    """Format a listing the way ``docker ps/images/volume ls`` do.

    ``items`` are JSON-able dicts; ``default_row(item) -> list[str]``; ``headers`` names
    the columns of ``table`` templates where Docker does (``{"ID": "CONTAINER ID"}``);
    ``methods`` of the items for templates (name -> fn(item, *args)).
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
        # a column per action that starts with a field ({{.ID}}, {{.Label "k"}}, {{.Names | upper}})
        header_names = [_header(m.group(1), headers)
                        for m in re.finditer(r"\{\{-?\s*\.([\w.]+)(?:\s[^}]*)?\}\}", body)]
        rows = [render(body, i, methods).split("\t") for i in items]
        hdr = header_names if len(header_names) == len(body.replace("\\t", "\t").split("\t")) else []
        return "\n".join(_align(([hdr] if hdr else []) + rows))
    return "\n".join(render(fmt, i, methods) for i in items)
