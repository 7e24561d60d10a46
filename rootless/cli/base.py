"""What every command module uses: the Context, Command, a parser factory."""

from __future__ import annotations

import argparse
import os
import sys

from rootless.errors import UsageError
from rootless.record import Record

# annotations are strings (from __future__): "Callable" needs no typing import,
# which would cost ~3 ms on every start


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 125) instead of exiting 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", hint=f"See '{self.prog} --help'.")

    def add_optional_value(self, *flags: str, const: str, **kw):
        """A flag whose value is optional, as Docker's and Podman's (pflag's NoOptDefVal):
        a bare ``--pull`` means ``--pull=<const>`` and only ``--pull=VALUE`` gives a
        value; the next word is never taken (argparse's ``nargs="?"`` would swallow
        ``rootless build --pull CONTEXT``'s CONTEXT)."""
        bare = self.__dict__.setdefault("_bare_flags", {})
        for f in flags:
            bare[f] = f"{f}={const}"
        return self.add_argument(*flags, **kw)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        bare = self.__dict__.get("_bare_flags")
        if bare:
            args = expand_bare_flags(list(sys.argv[1:] if args is None else args), bare)
        return super().parse_known_args(args, namespace)


def expand_bare_flags(args: list[str], bare: dict[str, str]) -> list[str]:
    """Rewrite each bare optional-value flag (before ``--``) to its ``FLAG=DEFAULT`` form (pure)."""
    out = []
    for i, a in enumerate(args):
        if a == "--":
            return out + args[i:]
        out.append(bare.get(a, a))
    return out


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter imports shutil (and bz2, lzma) for the terminal width on
    every add_argument; os.get_terminal_size is enough."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(2).columns
            except (ValueError, OSError):
                width = 80
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)


def make_parser(prog: str, summary: str, usage: str | None = None) -> Parser:
    return Parser(prog=prog, description=summary, usage=usage, allow_abbrev=False, formatter_class=_Formatter)


class Command(Record):
    summary: str
    setup: Callable[[Parser], None]
    handler: Callable[["Context", argparse.Namespace], int | None]
    usage: str | None = None

    def parser(self, prog: str) -> Parser:
        p = make_parser(prog, self.summary, self.usage)
        self.setup(p)
        return p


class Context:
    """What a command handler gets: environment, streams, lazily the Config."""

    def __init__(self, env: dict[str, str], out=None, err=None, config=None):
        self.env = env
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self._config = config

    @property
    def config(self):
        if self._config is None:
            from rootless.config import load_config

            self._config = load_config(self.env)
        return self._config

    def warn(self, msg: str) -> None:
        print(f"WARNING: {msg}", file=self.err)

    def reporter(self, quiet: bool = False):
        from rootless.report import make_reporter

        return make_reporter(self.err if not quiet else None, tty=_isatty(self.err))


def _isatty(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def command(registry: dict[str, Command], name: str, summary: str, usage: str | None = None):
    """Decorator: ``@command(COMMANDS, "run", "Run a command in a new container")``.

    The decorated function is the handler; its ``setup`` is given with
    ``@handler.setup`` or by the ``setup=`` attribute set afterwards.
    """

    def deco(fn):
        setup = getattr(fn, "_setup", lambda p: None)
        registry[name] = Command(summary, setup, fn, usage)
        return fn

    return deco


def arguments(setup: Callable[[Parser], None]):
    """Attach a parser set-up function to a handler (use above @command)."""

    def deco(fn):
        fn._setup = setup
        return fn

    return deco


def confirm(message: str) -> bool:
    """Docker's prompt of the prune commands: ask on stdout, read a line from stdin
    (a terminal or not); only "y"/"yes" goes on, so a script without -f removes nothing."""
    import sys

    print(f"{message} [y/N] ", end="", flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not answer.endswith("\n"):
        print()
    return answer.strip().lower() in ("y", "yes")
