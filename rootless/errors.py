"""The one error tree of rootless.

Every failure below the CLI raises a subclass of :class:`RootlessError`.  The
CLI catches the root once (``rootless.cli.main``), prints ``Error: message``
and, when there is one, ``Hint: hint`` on stderr, and exits with the error's
``exit_code`` (Docker's convention: 125 runtime error, 126 cannot execute,
127 not found, anything else is the container's own status)::

    RootlessError (125)
    +-- UsageError                 bad flag, bad argument syntax
    +-- ConfigError                malformed or invalid configuration file
    +-- HostError                  the host lacks something (with the fix)
    |   +-- HelperFailed           an external program (newuidmap, pasta...) failed
    |   +-- SyscallError           a checked syscall failed in a named set-up step
    +-- StoreError                 the local store is inconsistent or locked
    +-- ImageError
    |   +-- InvalidReference
    |   +-- ImageNotFound
    |   +-- PlatformNotFound       the index lacks the requested platform
    |   +-- RegistryError          HTTP / protocol error from a registry
    |   |   +-- AuthError
    |   +-- DigestMismatch         content does not match its digest
    |   +-- LayerError             hostile or broken layer
    +-- ContainerError
    |   +-- ContainerNotFound
    |   +-- NameInUse
    |   +-- ContainerStateError    e.g. rm of a running container
    +-- CommandNotFound (127)
    +-- CannotExecute (126)
    +-- EmulationError             no way to run a foreign architecture
    +-- NetworkError
    |   +-- PortInUse
    +-- VolumeError
    +-- BuildError
    +-- MachineError
"""

from __future__ import annotations


class RootlessError(Exception):
    """Root of all rootless errors: a one-line message and an optional hint."""

    exit_code = 125

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(RootlessError):
    pass


class ConfigError(RootlessError):
    pass


class HostError(RootlessError):
    pass


class HelperFailed(HostError):
    """An external host tool failed."""

    def __init__(self, desc: str, status: int | None, stderr: str = "", hint: str | None = None):
        detail = (stderr or "").strip().splitlines()
        last = detail[-1] if detail else ""
        what = f"exit status {status}" if status is not None and status >= 0 else (
            f"killed by signal {-status}" if status is not None else "could not start")
        msg = f"{desc} failed ({what})" + (f": {last}" if last else "")
        super().__init__(msg, hint)
        self.desc = desc
        self.status = status
        self.stderr = stderr


class SyscallError(HostError):
    """A syscall failed during a named set-up step."""

    def __init__(self, step: str, errno_: int, hint: str | None = None):
        import os

        super().__init__(f"{step}: {os.strerror(errno_)}", hint)
        self.step = step
        self.errno = errno_


class StoreError(RootlessError):
    pass


class ImageError(RootlessError):
    pass


class InvalidReference(ImageError):
    pass


class ImageNotFound(ImageError):
    pass


class PlatformNotFound(ImageError):
    pass


class RegistryError(ImageError):
    pass


class AuthError(RegistryError):
    pass


class DigestMismatch(ImageError):
    pass


class LayerError(ImageError):
    pass


class ContainerError(RootlessError):
    pass


class ContainerNotFound(ContainerError):
    pass


class NameInUse(ContainerError):
    pass


class ContainerStateError(ContainerError):
    pass


class CommandNotFound(RootlessError):
    exit_code = 127


class CannotExecute(RootlessError):
    exit_code = 126


class EmulationError(RootlessError):
    pass


class NetworkError(RootlessError):
    pass


class PortInUse(NetworkError):
    pass


class VolumeError(RootlessError):
    pass


class BuildError(RootlessError):
    pass


class MachineError(RootlessError):
    pass
