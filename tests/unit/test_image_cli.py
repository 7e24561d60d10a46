import subprocess
import sys

import pytest

from rootless.cli.images import COMMANDS

WORDS = [["pull"], ["push"], ["images"], ["rmi"], ["tag"], ["history"], ["save"], ["load"], ["login"], ["logout"],
         ["image", "inspect"], ["image", "prune"], ["image", "ls"], ["image", "rm"]]


@pytest.mark.parametrize("words", WORDS, ids=" ".join)
def test_help(words):
    cp = subprocess.run([sys.executable, "-m", "rootless", *words, "--help"], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    assert "usage:" in cp.stdout.lower()


def test_every_image_command_word_has_a_command():
    from rootless.cli.main import GROUPS, TOP

    for word, (mod, name) in TOP.items():
        if mod == "images":
            assert name in COMMANDS, word
    for sub, name in GROUPS["image"][1].items():
        assert name in COMMANDS, sub


def test_save_refuses_a_terminal_and_bad_format():
    cp = subprocess.run([sys.executable, "-m", "rootless", "save", "--format", "zip", "busybox"],
                        capture_output=True, text=True)
    assert cp.returncode == 125 and "docker-archive" in cp.stderr
