"""Golden tests of Dockerfile word processing (BuildKit's shell.Lex semantics)."""

import pytest

from rootless.build.lex import Lex, LexError, _reverse_pattern, shell_pattern_regex

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}

# source | expected ("error" = must fail), as BuildKit's envVarTest (Unix rows)
WORD_CASES = r"""
hello                    |hello
he'll'o                  |hello
he'llo                   |error
he\'llo                  |he'llo
he\\'llo                 |error
abc\tdef                 |abctdef
"abc\tdef"               |abc\tdef
"abc\\tdef"              |abc\tdef
'abc\tdef'               |abc\tdef
hello\                   |hello
hello\\                  |hello\
"hello                   |error
"hello\"                 |error
"hel'lo"                 |hel'lo
'hello                   |error
'hello\'                 |hello\
'hello\there'            |hello\there
'hello\\there'           |hello\\there
"''"                     |''
$.                       |$.
he$1x                    |hex
he$.x                    |he$.x
he$pwd.                  |he.
he$PWD                   |he/home
he\$PWD                  |he$PWD
he\\$PWD                 |he\/home
"he\$PWD"                |he$PWD
"he\\$PWD"               |he\/home
\${}                     |${}
\${}aaa                  |${}aaa
he\${}                   |he${}
he\${}xx                 |he${}xx
${}                      |error
${}aaa                   |error
he${}                    |error
he${}xx                  |error
he${hi}                  |he
he${hi}xx                |hexx
he${PWD}                 |he/home
he${.}                   |error
he${XXX:-000}xx          |he000xx
he${PWD:-000}xx          |he/homexx
he${XXX:-$PWD}xx         |he/homexx
he${XXX:-${PWD:-yyy}}xx  |he/homexx
he${XXX:-${YYY:-yyy}}xx  |heyyyxx
he${XXX:YYY}             |error
he${XXX?}                |error
he${XXX:?}               |error
he${PWD?}                |he/home
he${PWD:?}               |he/home
he${NULL?}               |he
he${NULL:?}              |error
he${XXX:+${PWD}}xx       |hexx
he${PWD:+${XXX}}xx       |hexx
he${PWD:+${SHELL}}xx     |hebashxx
he${XXX:+000}xx          |hexx
he${PWD:+000}xx          |he000xx
'he${XX}'                |he${XX}
"he${PWD}"               |he/home
"he'$PWD'"               |he'/home'
"$PWD"                   |/home
'$PWD'                   |$PWD
'\$PWD'                  |\$PWD
'"hello"'                |"hello"
'he\$PWD'                |he\$PWD
he${PWD                  |error
he${PWD:=000}xx          |error
he${PWD:+${PWD}:}xx      |he/home:xx
he${XXX:-\$PWD:}xx       |he$PWD:xx
he${XXX:-\${PWD}z}xx     |he${PWDz}xx
안녕하세요                 |안녕하세요
안'녕'하세요               |안녕하세요
안'녕하세요                |error
안녕\'하세요               |안녕'하세요
안녕$PWD                  |안녕/home
안녕${XXX:-${PWD:-yyy}}xx |안녕/homexx
$KOREAN                   |한국어
안녕$KOREAN               |안녕한국어
${{aaa}                   |error
${aaa}}                   |}
${aaa                     |error
${{aaa                    |error
${{aaa}}                  |error
${aaa}bbb}                |bbb}
${NULL-x}                 |
${NULL:-x}                |x
${XXX-x}                  |x
${NULL+x}                 |x
${NULL:+x}                |
${XXX+x}                  |
"${PWD:-a b}"             |/home
"${XXX:-a b}"             |a b
"a"'b'c                   |abc
"\""                      |"
'\'                       |\
"\a"                      |\a
"$"                       |$
$                         |$
"a\"                      |error
"""


def _cases():
    for line in WORD_CASES.strip("\n").splitlines():
        src, _, exp = line.partition("|")
        yield src.strip(), exp


@pytest.mark.parametrize("src,expected", list(_cases()))
def test_process_word_golden(src, expected):
    lex = Lex("\\")
    if expected == "error":
        with pytest.raises(LexError):
            lex.process_word(src, ENV)
    else:
        assert lex.process_word(src, ENV) == expected


MATCH_CASES = [
    # input, env, expected (None = error)
    ("x", {"DUMMY": "dummy"}, "x"),
    ("x ${UNUSED}", {}, "x "),
    ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc"),
    ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc"),
    ("${FOO:-}", {"FOO": "xxx"}, "xxx"),
    ("${FOO:-}", {}, ""),
    ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb "),
    ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  "),
    ("${FOO?aaa}", {"FOO": "xxx"}, "xxx"),
    ("${BAR?bbb}", {"BAR": ""}, ""),
    ("${BAZ?ccc}", {}, None),
    ("${FOO:?aaa}", {"FOO": "xxx"}, "xxx"),
    ("${BAR:?bbb}", {"BAR": ""}, None),
    ("${BAZ:?}", {}, None),
    ("${FOO=aaa}", {"FOO": "xxx"}, None),
    ("${FOO=:aaa}", {"FOO": "xxx"}, None),
    ("${FOO=}", {}, None),
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO%y}", {"FOO": "xxyy"}, "xxy"),
    ("${FOO%%y*}", {"FOO": "xxyy"}, "xx"),
    ("${FOO%y*}", {"FOO": "xxyy"}, "xxy"),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO:#}", {}, None),
    ("${FOO:##}", {}, None),
    ("${FOO:%}", {}, None),
    ("${FOO:%%}", {}, None),
    ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
     "/foo.*/*.txt - /foo..*.txt"),
    ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
     "/tmp/bar.txt - /bar.txt"),
    ("${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
     {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"}, "/foo/b/c.txt - /foo/c.txt"),
    ("${FOO/$NEEDLE/$REPLACEMENT}", {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
     "https://google.de"),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO//ww}", {"FOO": "xxyy"}, None),
    ("${FOO//}", {"FOO": "xxyy"}, None),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
     "something-v1.2.3.linux-arm-v7.tar.gz"),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm64", "TARGETVARIANT": ""},
     "something-v1.2.3.linux-arm64.tar.gz"),
]


@pytest.mark.parametrize("src,env,expected", MATCH_CASES)
def test_modifiers(src, env, expected):
    lex = Lex("\\")
    if expected is None:
        with pytest.raises(LexError):
            lex.process_word(src, env)
    else:
        assert lex.process_word(src, env) == expected


def test_required_messages():
    lex = Lex("\\")
    with pytest.raises(LexError, match="message herex"):
        lex.process_word("${VAR:?message here$ARG}", {"VAR": "", "ARG": "x"})
    with pytest.raises(LexError, match="VAR: is not allowed to be unset"):
        lex.process_word("${VAR?}", {})
    with pytest.raises(LexError, match="VAR: is not allowed to be empty"):
        lex.process_word("${VAR:?}", {"VAR": ""})
    assert lex.process_word("${VAR?message}", {"VAR": ""}) == ""


def test_matches_and_unmatched():
    lex = Lex("\\")
    res, matched, unmatched = lex.process_word_matches("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "x", "BAR": ""})
    assert res == "x bbb ccc"
    assert matched == {"FOO", "BAR"}
    assert unmatched == {"BAZ"}


# words: ProcessWords splits after substitution, honouring quotes
WORDS_ENV = {"hi": "hi", "space": "abc  def", "leading": "  ab c", "trailing": "ab c   ", "tab": "\t"}
WORDS_CASES = [
    ("hello", ["hello"]),
    ("hello${hi}bye", ["hellohibye"]),
    ("hello${space}bye", ["helloabc", "defbye"]),
    ('hello"${space}"bye', ["helloabc  defbye"]),
    ('hello "${space}"bye', ["hello", "abc  defbye"]),
    ("hello${leading}def", ["hello", "ab", "cdef"]),
    ('hello"${leading}" def', ["hello  ab c", "def"]),
    ('hello"${leading}"', ["hello  ab c"]),
    ("hello${leading}", ["hello", "ab", "c"]),
    ("hello${trailing}", ["helloab", "c"]),
    ("hello${trailing}d", ["helloab", "c", "d"]),
    ('hello"${trailing}"d', ["helloab c   d"]),
    ("a b\\ c", ["a", "b c"]),
    ("'a b' \"c d\"", ["a b", "c d"]),
    ('"" x', ["x"]),
    ("x${tab}y", ["x", "y"]),
    ("  spaced   out  ", ["spaced", "out"]),
]


@pytest.mark.parametrize("src,expected", WORDS_CASES)
def test_process_words(src, expected):
    assert Lex("\\").process_words(src, WORDS_ENV) == expected


def test_backtick_escape_token():
    lex = Lex("`")
    assert lex.process_word("C:\\dir\\$X", {"X": "y"}) == "C:\\dir\\y"
    assert lex.process_word("a`$X", {"X": "y"}) == "a$X"
    assert lex.process_word('"a`"b"', {}) == 'a"b'


def test_raw_modes_used_for_heredoc_detection():
    lex = Lex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    assert lex.process_words("cat <<'EOF' > $OUT", {}) == ["cat", "<<'EOF'", ">", "$OUT"]
    assert lex.process_words('a\\ b "${X:-y}"', {}) == ["a\\ b", '"${X:-y}"']
    lex2 = Lex("\\", skip_unset_env=True)
    assert lex2.process_word("$A ${B} ${C:-d} $D", {"D": "x"}) == "$A ${B} ${C:-d} x"


def test_skip_process_quotes():
    lex = Lex("\\", skip_process_quotes=True)
    assert lex.process_word("echo \"$X\" '$X'", {"X": "1"}) == "echo \"1\" '1'"


def test_pattern_conversion():
    assert shell_pattern_regex("*", True, True).pattern == "^.*"
    assert shell_pattern_regex("?", True, True).pattern == "^."
    assert shell_pattern_regex("\\*", True, True).pattern == "^\\*"
    for bad in ("\\", "\\x", "\\\\\\"):
        with pytest.raises(LexError):
            shell_pattern_regex(bad, True, True)


@pytest.mark.parametrize("pattern,expected", [
    ("a\\*c", "c\\*a"), ("\\\\\\ab", "b\\a\\\\"), ("ab\\", "\\ba"), ("\\\\b", "b\\\\"),
])
def test_reverse_pattern(pattern, expected):
    assert _reverse_pattern(pattern) == expected
