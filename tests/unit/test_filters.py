"""--filter parsing, Docker's label matching and timestamps (rootless.cli.filters)."""

import datetime
import time

import pytest

from rootless.cli.filters import duration, match_labels, parse, prune_labels, timestamp
from rootless.errors import UsageError

NOW = 1_700_000_000.0


def test_parse_keeps_only_what_the_command_applies():
    got = parse(["label=a=b", "until=10m", "label!=c", "LABEL=d"], ("until", "label", "label!"), "prune")
    assert got == {"label": ["a=b", "d"], "until": ["10m"], "label!": ["c"]}
    with pytest.raises(UsageError, match="invalid filter 'name'") as e:
        parse(["name=x"], ("until", "label", "label!"), "container prune")
    assert e.value.exit_code == 125 and "until=, label=, label!=" in e.value.hint
    with pytest.raises(UsageError, match="bad format"):
        parse(["label"], ("label",), "ps")
    with pytest.raises(UsageError, match="not supported by rootless"):
        parse(["health=healthy"], ("id",), "ps", unsupported=("health",))


def test_labels_as_docker_prune_matches_them():
    labels = {"a": "1", "b": "2"}
    assert match_labels(labels, ["a", "b=2"]) and not match_labels(labels, ["a=2"]) and match_labels(labels, [])
    assert prune_labels(labels, {}) and prune_labels(labels, {"label": ["a"]})
    assert not prune_labels(labels, {"label!": ["a"]})
    assert prune_labels(labels, {"label!": ["a=9"]}) and prune_labels(labels, {"label!": ["c"]})
    # Docker: a container is kept only when it has all the label! pairs
    assert prune_labels(labels, {"label!": ["a", "c"]})
    assert not prune_labels(labels, {"label!": ["a", "b=2"]})
    assert not prune_labels(labels, {"label": ["a"], "label!": ["b"]})


@pytest.mark.parametrize("text,seconds", [("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("300ms", 0.3),
                                          ("-2s", -2), ("2h45m10s", 9910), ("1us", 1e-6)])
def test_go_durations(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "h", "1h-5m", "10x", "1.h.2"])
def test_not_durations(text):
    assert duration(text) is None


def test_timestamps_as_docker_takes_them():
    assert timestamp("10m", NOW) == NOW - 600
    assert timestamp("1h30m", NOW) == NOW - 5400
    assert timestamp("1700000000", NOW) == 1700000000.0
    assert timestamp("1699999999.5", NOW) == 1699999999.5
    assert timestamp("2023-11-14T22:13:20Z", NOW) == NOW
    assert timestamp("2023-11-14T22:13:20.25Z", NOW) == NOW + 0.25
    assert timestamp("2023-11-14T23:13:20+01:00", NOW) == NOW
    # without a zone: local time
    local = datetime.datetime(2023, 11, 14, 22, 13).timestamp()
    assert timestamp("2023-11-14T22:13", NOW) == local
    assert timestamp("2023-11-14", NOW) == datetime.datetime(2023, 11, 14).timestamp()
    for bad in ("yesterday", "2023-13-01", "2023-11-14 22:13", "12:00", "", "10x"):
        with pytest.raises(ValueError):
            timestamp(bad, NOW)


def test_timestamp_now_relative():
    t = time.time()
    assert abs(timestamp("0s", t) - t) < 1e-6
