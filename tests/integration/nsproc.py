"""A process in fresh namespaces the way the runtime makes a container on a network.

    python nsproc.py USERNS_PATH [--hostname NAME] -- ARGV...

joins the user namespace at USERNS_PATH (the rootless network namespace's,
or any other of ours), unshares a new network and UTS namespace, becomes
root there, prints "ready PID" and waits for a line on stdin before it
execs ARGV. The tests attach it to networks in between. Real namespaces,
real processes: only the image and the mount namespace are left out.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from rootless import syscalls  # noqa: E402


def main(argv):
    userns = argv[0]
    rest = argv[1:]
    hostname = None
    if rest and rest[0] == "--hostname":
        hostname, rest = rest[1], rest[2:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    fd = os.open(userns, os.O_RDONLY)
    syscalls.setns(fd, syscalls.CLONE_NEWUSER)
    os.close(fd)
    syscalls.unshare(syscalls.CLONE_NEWNET | syscalls.CLONE_NEWUTS)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if hostname:
        syscalls.sethostname(hostname)
    print(f"ready {os.getpid()}", flush=True)
    if not sys.stdin.readline():
        return 1
    os.execvp(rest[0], rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
