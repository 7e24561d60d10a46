"""Which user-mode backend (pasta, slirp4netns) `run`, the per-user namespace and `doctor` use, and the
messages when it is missing: one chooser for all (host tools faked: pure logic)."""

import pytest

from rootless import hosttools
from rootless.config import Config
from rootless.errors import NetworkError
from rootless.network import choose_backend, plan_network, rootlessns


class Opts:
    def __init__(self, network="default"):
        self.network = network


@pytest.fixture
def installed(monkeypatch):
    """installed(pasta=..., slirp4netns=...): which backends hosttools.find sees."""
    def set_(**tools):
        paths = {name: f"/usr/bin/{name}" for name, there in tools.items() if there}
        monkeypatch.setattr(hosttools, "find", lambda name, env_path=None: paths.get(name))
    return set_


def cfg(tmp_path, backend="auto"):
    return Config(data_root=tmp_path / "store", runtime_dir=tmp_path / "run", config_dir=tmp_path / "cfg",
                  network_backend=backend)


@pytest.mark.parametrize("pasta, slirp, want", [(True, True, "pasta"), (True, False, "pasta"),
                                                (False, True, "slirp4netns")])
def test_auto_prefers_pasta(tmp_path, installed, pasta, slirp, want):
    installed(pasta=pasta, slirp4netns=slirp)
    assert choose_backend(cfg(tmp_path)) == (want, f"/usr/bin/{want}")
    assert plan_network(Opts(), cfg(tmp_path)).mode == want


def test_configured_backend_is_used_even_when_the_other_is_there(tmp_path, installed):
    installed(pasta=True, slirp4netns=True)
    assert choose_backend(cfg(tmp_path, "slirp4netns"))[0] == "slirp4netns"
    assert plan_network(Opts(), cfg(tmp_path, "slirp4netns")).mode == "slirp4netns"
    # --network pasta wins over the configuration
    assert plan_network(Opts("pasta"), cfg(tmp_path, "slirp4netns")).mode == "pasta"


def test_none_installed(tmp_path, installed):
    installed()
    for call in (lambda: choose_backend(cfg(tmp_path)), lambda: plan_network(Opts(), cfg(tmp_path)),
                 lambda: rootlessns.choose_backend(cfg(tmp_path))):
        with pytest.raises(NetworkError) as ei:
            call()
        assert ei.value.message == "no user-mode network backend: neither pasta nor slirp4netns is installed"
        assert ei.value.hint == "install one: apt-get install passt (or slirp4netns), or use --network none"
        assert ei.value.exit_code == 125


def test_configured_backend_missing_names_it_not_neither(tmp_path, installed):
    """[network] backend = "pasta" without pasta: the error names pasta and its package, and the
    slirp4netns that is installed; `run` and the per-user namespace say the same."""
    installed(slirp4netns=True)
    msgs = set()
    for call in (lambda: plan_network(Opts(), cfg(tmp_path, "pasta")),
                 lambda: rootlessns.choose_backend(cfg(tmp_path, "pasta"))):
        with pytest.raises(NetworkError) as ei:
            call()
        msgs.add((ei.value.message, ei.value.hint))
    assert msgs == {("pasta not found: it is the network backend set in the configuration ([network] backend)",
                     'install it: apt-get install passt, or set [network] backend = "auto" to use slirp4netns '
                     "(installed)")}
    installed()
    with pytest.raises(NetworkError) as ei:
        plan_network(Opts(), cfg(tmp_path, "slirp4netns"))
    assert ei.value.message.startswith("slirp4netns not found: it is the network backend set in the configuration")
    assert ei.value.hint == "install it: apt-get install slirp4netns"


def test_explicit_network_mode_missing(tmp_path, installed):
    installed(pasta=True)
    with pytest.raises(NetworkError) as ei:
        plan_network(Opts("slirp4netns"), cfg(tmp_path))
    assert (ei.value.message, ei.value.hint) == ("slirp4netns not found: needed for --network slirp4netns",
                                                 "install it: apt-get install slirp4netns")
    installed(slirp4netns=True)
    with pytest.raises(NetworkError) as ei:
        plan_network(Opts("pasta"), cfg(tmp_path))
    assert (ei.value.message, ei.value.hint) == ("pasta not found: needed for --network pasta",
                                                 "install it: apt-get install passt")


@pytest.mark.parametrize("pasta, slirp, status", [(True, True, "OK"), (True, False, "OK"), (False, True, "WARN"),
                                                  (False, False, "FAIL")])
def test_doctor_check_levels(tmp_path, installed, pasta, slirp, status):
    """doctor's network check, with the tools found or not (its WARN and FAIL branches too)."""
    from rootless import doctor

    installed(pasta=pasta, slirp4netns=slirp)
    f = doctor.HostFacts(config=cfg(tmp_path), user="u", uid=1000, gid=1000, kernel=(6, 1), kernel_release="6.1")
    c = doctor.check_network_backends(f)
    assert c.status == status
    assert ("passt" in c.fix) == (not pasta)
