"""Names users give (volumes, networks, machines, build stages) are checked whole:
a trailing newline or a non-ASCII letter is refused, as Docker does."""

from __future__ import annotations

import pytest

from rootless.errors import RootlessError


@pytest.mark.parametrize("bad", ["data\n", "da\nta", "dätä", ""])
def test_network_names(bad):
    from rootless.network.networks import validate_name

    with pytest.raises(RootlessError):
        validate_name(bad)
    assert validate_name("n1.a_b-c") == "n1.a_b-c"


@pytest.mark.parametrize("bad", ["default\n", "m\n1", "mächine"])
def test_machine_names(bad):
    from vmhost.spec import check_name

    with pytest.raises(RootlessError):
        check_name(bad)
    check_name("dev-1")


def test_volume_and_stage_patterns_match_whole_names():
    from rootless.build.instructions import _STAGE_NAME
    from rootless.runtime.spec import _HOSTNAME, _VOLUME_NAME
    from rootless.runtime.volumes import _NAME

    for rx in (_NAME, _VOLUME_NAME, _STAGE_NAME, _HOSTNAME):
        assert rx.match("abc") and not rx.match("abc\n") and not rx.match("äbc")
