"""``--filter KEY=VALUE`` and Docker's timestamps (pure).

``parse(items, supported, command)`` checks each key against what the command
really applies: a key that is accepted and then ignored would widen what a
``prune`` deletes, so anything else is a UsageError (125) listing the keys.
``label!=K[=V]`` arrives as the key ``label!`` (Docker's filters.ParseFlag).

``timestamp(value, now)`` is Docker's GetTimestamp: a Go duration back from
now (``10m``, ``1h30m``), a unix time (``1700000000[.5]``), or an RFC 3339
date or date-time (local time without a zone).
"""

from __future__ import annotations

import re

from rootless.errors import UsageError

_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse(items, supported: tuple[str, ...], command: str,
          unsupported: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """``{key: [values]}``; ``unsupported``: Docker's keys that rootless does not apply
    (refused with that reason rather than as unknown)."""
    out: dict[str, list[str]] = {}
    shown = ", ".join(k + "=" for k in supported)
    for f in items:
        k, eq, v = f.partition("=")
        if not eq:
            raise UsageError(f"bad format of filter {f!r} (expected name=value)", hint=f"{command} filters: {shown}")
        k = k.strip().lower()
        if k in unsupported:
            raise UsageError(f"the filter {k!r} is not supported by rootless", hint=f"{command} filters: {shown}")
        if k not in supported:
            raise UsageError(f"invalid filter {k!r}", hint=f"{command} filters: {shown}")
        out.setdefault(k, []).append(v)
    return out


def match_labels(labels: dict, wanted: list[str]) -> bool:
    """Docker's MatchKVList: every ``K`` / ``K=V`` of ``wanted`` is among ``labels``."""
    for w in wanted:
        k, eq, v = w.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


def prune_labels(labels: dict, filters: dict[str, list[str]]) -> bool:
    """Docker's prune (matchLabels): all ``label`` filters match, and not all ``label!`` ones."""
    if not match_labels(labels, filters.get("label", [])):
        return False
    if filters.get("label!") and match_labels(labels, filters["label!"]):
        return False
    return True


def duration(value: str) -> float | None:
    """A Go duration (time.ParseDuration) in seconds; None when it is not one."""
    s = value
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if not s:
        return None
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def timestamp(value: str, now: float) -> float:
    """Docker's GetTimestamp as a unix time; raises ValueError."""
    value = value.strip()
    d = duration(value) if value != "0" else None
    if d is not None:
        return now - d
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    import datetime

    txt = value
    frac = 0.0
    m = re.search(r"\.(\d+)", txt)
    if m and "T" in txt:           # nanoseconds: more digits than datetime takes
        frac = float("0." + m.group(1))
        txt = txt[:m.start()] + txt[m.end():]
    if txt[-1:] in ("z", "Z"):
        txt = txt[:-1] + "+00:00"
    try:
        dt = datetime.datetime.fromisoformat(txt)
    except ValueError:
        raise ValueError(f"failed to parse value as time or duration: {value!r}") from None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2})?)?)?([+-]\d{2}:\d{2})?", txt):
        raise ValueError(f"failed to parse value as time or duration: {value!r}")
    return dt.timestamp() + frac     # without a zone: local time (as Docker)


def timestamp_arg(value: str, now: float, what: str) -> float:
    """``timestamp`` for an option or filter: a UsageError naming ``what`` and the forms."""
    try:
        return timestamp(value, now)
    except ValueError:
        raise UsageError(f"invalid {what} value {value!r}",
                         hint="use a duration (10m, 1h30m), a unix time or an RFC 3339 date "
                              "(2006-01-02T15:04:05Z)") from None
