"""`top`'s pure parts (rootless.runtime.top): id maps, passwd names, ps columns."""

import os

import pytest

from rootless.runtime.top import Users, name_users, parse_id_map, passwd_names, split_ps, to_inside

MAP = "         0       1001          1\n         1     100000      65536\n"


def test_id_map_back_to_the_container():
    maps = parse_id_map(MAP)
    assert maps == [(0, 1001, 1), (1, 100000, 65536)]
    assert to_inside(1001, maps) == 0 and to_inside(100000, maps) == 1 and to_inside(100999, maps) == 1000
    assert to_inside(165536, maps) is None and to_inside(5, maps) is None


def test_passwd_names_first_entry_wins():
    text = "root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\n# c\nbad\n:x:5:5::/:\nt:x:1000:1000::/h:/bin/sh"
    assert passwd_names(text) == {0: "root", 1000: "t"}
    users = Users(parse_id_map(MAP), passwd_names(text))
    assert users.name(1001) == "root" and users.name(100999) == "t" and users.name(100041) == "42"
    assert users.uid(100999) == "1000" and users.name(7) == "65534"


PS = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 09:00 ?        00:00:01 /sbin/init splash
rltest       {me}       1  0 09:01 pts/0    00:00:00 python3 -c x y
"""


def test_split_ps_keeps_the_containers_processes_and_the_command_whole():
    me = os.getpid()
    hdr, rows = split_ps(PS.format(me=me), [me])
    assert hdr == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["rltest", str(me), "1", "0", "09:01", "pts/0", "00:00:00", "python3 -c x y"]]
    assert split_ps("", [me]) == ([], [])
    with pytest.raises(ValueError):
        split_ps("USER COMMAND\nroot init\n", [1])


def test_name_users_from_the_process_uids():
    me = os.getpid()
    uid = os.getuid()
    users = Users([(7, uid, 1)], {7: "seven"})
    hdr = ["PID", "USER", "UID", "EUID", "CMD"]
    rows = [[str(me), "host", "host", str(uid), "x y"]]
    assert name_users(hdr, rows, users) == [[str(me), "seven", "seven", "7", "x y"]]
    assert name_users(hdr, rows, users, numeric_uid=True) == [[str(me), "seven", "7", "7", "x y"]]
    # the last column (the command) is never touched; no PID column: unchanged
    assert name_users(["PID", "USER"], [[str(me), "root"]], users) == [[str(me), "root"]]
    assert name_users(["USER", "X"], [["a", "b"]], users) == [["a", "b"]]
