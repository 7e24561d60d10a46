import struct

import pytest

from rootless.network.dns import (RCODE_FORMERR, RCODE_NOTIMP, RCODE_NXDOMAIN, RCODE_OK, TYPE_A, TYPE_AAAA,
                                  TYPE_PTR, DNSFormatError, Message, Records, RR, answer_locally, build_query,
                                  build_response, encode_name, error_response, host_resolvers, parse_message,
                                  ptr_to_ip, reverse_name)

# A query for "example.com" A, id 0x1234, RD, as `dig` sends it (EDNS OPT record stripped).
DIG_QUERY = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")


def test_parse_real_query_bytes():
    m = parse_message(DIG_QUERY)
    assert m.id == 0x1234 and m.rd and not m.is_response and m.opcode == 0
    assert len(m.questions) == 1
    q = m.questions[0]
    assert (q.name, q.qtype, q.qclass) == ("example.com", TYPE_A, 1)


def test_build_query_matches_dig():
    assert build_query("example.com", TYPE_A, mid=0x1234) == DIG_QUERY
    assert build_query("Example.COM.", TYPE_A, mid=0x1234) != DIG_QUERY  # case is kept on the wire
    assert parse_message(build_query("Example.COM.", TYPE_A)).questions[0].name == "example.com"


def test_response_layout_byte_by_byte():
    q = parse_message(DIG_QUERY)
    r = build_response(q, [RR("example.com", TYPE_A, 10, "10.89.0.2")])
    mid, flags, qd, an, ns, ar = struct.unpack("!6H", r[:12])
    assert mid == 0x1234
    assert flags == 0x8000 | 0x0400 | 0x0100 | 0x0080  # QR AA RD RA, rcode 0
    assert (qd, an, ns, ar) == (1, 1, 0, 0)
    question = r[12:12 + 17]
    assert question == DIG_QUERY[12:]
    rec = r[12 + 17:]
    assert rec == encode_name("example.com") + struct.pack("!HHIH", 1, 1, 10, 4) + bytes([10, 89, 0, 2])


def test_round_trip_answers():
    q = parse_message(build_query("web", TYPE_AAAA, mid=7))
    r = parse_message(build_response(q, [RR("web", TYPE_AAAA, 10, "fd00::2"), RR("web", TYPE_AAAA, 10, "fd00::3")]))
    assert r.is_response and r.id == 7 and r.rcode == RCODE_OK
    assert [a.data for a in r.answers] == ["fd00::2", "fd00::3"]
    q = parse_message(build_query("2.0.89.10.in-addr.arpa", TYPE_PTR, mid=8))
    r = parse_message(build_response(q, [RR(q.questions[0].name, TYPE_PTR, 10, "web")]))
    assert r.answers[0].data == "web"


def test_compressed_names_in_answers():
    # question "a.example" at 12, answer name = pointer to 12
    hdr = struct.pack("!6H", 1, 0x8180, 1, 1, 0, 0)
    qn = encode_name("a.example")
    body = qn + struct.pack("!2H", 1, 1) + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([1, 2, 3, 4])
    m = parse_message(hdr + body)
    assert m.answers[0].name == "a.example" and m.answers[0].data == "1.2.3.4"


@pytest.mark.parametrize("data", [
    b"",
    b"\x00" * 11,
    struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x05ab",                         # label past the end
    struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01",  # pointer to itself (loop)
    struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\xff",                        # forward pointer
    struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x40abc\x00\x00\x01\x00\x01",     # extended label type
    struct.pack("!6H", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # > 255
    struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x01a\x00\x00",                   # truncated question
    struct.pack("!6H", 1, 0, 999, 0, 0, 0),                                     # absurd count
])
def test_hostile_packets_raise_format_error(data):
    with pytest.raises(DNSFormatError):
        parse_message(data)


def test_error_response():
    assert error_response(b"\x00" * 5, RCODE_FORMERR) is None
    r = error_response(struct.pack("!6H", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\xc0", RCODE_FORMERR)
    mid, flags = struct.unpack("!2H", r[:4])
    assert mid == 0xBEEF and flags & 0x8000 and flags & 0xF == RCODE_FORMERR and flags & 0x0100
    assert error_response(struct.pack("!6H", 1, 0x8000, 0, 0, 0, 0), RCODE_FORMERR) is None  # a response


def test_reverse_names():
    assert reverse_name("10.89.0.2") == "2.0.89.10.in-addr.arpa"
    assert ptr_to_ip("2.0.89.10.in-addr.arpa") == "10.89.0.2"
    assert ptr_to_ip(reverse_name("fd00::1")) == "fd00::1"
    assert ptr_to_ip("1.2.in-addr.arpa") is None
    assert ptr_to_ip("x.0.89.10.in-addr.arpa") is None
    assert ptr_to_ip("example.com") is None


def _ask(records, name, qtype):
    q = parse_message(build_query(name, qtype, mid=99))
    r = answer_locally(q, records)
    return None if r is None else parse_message(r)


def test_records_answers():
    rec = Records(domain="dns.rootless")
    rec.set("c1", ["web", "WWW", "abcdef012345"], ["10.89.0.2", "fd00::2"])
    rec.set("c2", ["db", "www"], ["10.89.0.3"])
    r = _ask(rec, "web", TYPE_A)
    assert r.rcode == RCODE_OK and [a.data for a in r.answers] == ["10.89.0.2"]
    r = _ask(rec, "web.dns.rootless.", TYPE_AAAA)
    assert [a.data for a in r.answers] == ["fd00::2"]
    r = _ask(rec, "WWW", TYPE_A)  # a shared alias: both containers
    assert sorted(a.data for a in r.answers) == ["10.89.0.2", "10.89.0.3"]
    r = _ask(rec, "db", TYPE_AAAA)  # ours, no IPv6: NODATA, not NXDOMAIN
    assert r.rcode == RCODE_OK and r.answers == ()
    r = _ask(rec, "db", 15)  # MX: NODATA
    assert r.rcode == RCODE_OK and r.answers == ()
    r = _ask(rec, "3.0.89.10.in-addr.arpa", TYPE_PTR)
    assert r.answers[0].data == "db.dns.rootless"
    assert _ask(rec, "example.com", TYPE_A) is None          # forwarded
    assert _ask(rec, "9.0.89.10.in-addr.arpa", TYPE_PTR) is None
    rec.remove("c1")
    assert _ask(rec, "web", TYPE_A) is None
    assert [a.data for a in _ask(rec, "www", TYPE_A).answers] == ["10.89.0.3"]


def test_unsupported_opcode_and_question_count():
    rec = Records()
    q = parse_message(struct.pack("!6H", 5, 0x2800, 1, 0, 0, 0) + encode_name("x") + struct.pack("!2H", 1, 1))
    assert parse_message(answer_locally(q, rec)).rcode == RCODE_NOTIMP
    q = Message(6, 0x0100, ())
    assert parse_message(answer_locally(q, rec)).rcode == RCODE_FORMERR


def test_truncation_sets_tc():
    q = parse_message(build_query("many", TYPE_A))
    rrs = [RR("many", TYPE_A, 10, f"10.0.{i // 256}.{i % 256}") for i in range(100)]
    raw = build_response(q, rrs)
    assert len(raw) <= 512
    r = parse_message(raw)
    assert r.flags & 0x0200 and 0 < len(r.answers) < 100


def test_host_resolvers(tmp_path):
    f = tmp_path / "resolv.conf"
    f.write_text("# comment\nsearch lan\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver bogus\n")
    assert host_resolvers(str(f)) == [("10.0.0.1", 53), ("fe80::1%eth0", 53)]
    assert host_resolvers(str(tmp_path / "missing")) == [("127.0.0.1", 53)]
    assert RCODE_NXDOMAIN == 3
