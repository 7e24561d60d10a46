"""Golden tests of the Dockerfile parser (lines, directives, continuations, heredocs)."""

import pytest

from rootless.build.parser import (DockerfileError, Heredoc, chomp_heredoc, extract_builder_flags,
                                   heredocs_from_line, parse, parse_heredoc, parse_words)


def dump(text: str) -> str:
    return "\n".join(n.dump() for n in parse(text).nodes)


GOLDEN = [
    # (name, Dockerfile, expected dump)
    ("tabs-and-kv",
     "FROM\tdebian:12\nLABEL\tmaintainer\tJane Doe <jane@example.org> (@jane)\n"
     "ENV\tPATH\t/opt/bin:$PATH\nENV\tA=1 B=\"two words\" C='x y'\n",
     '(from "debian:12")\n'
     '(label "maintainer" "Jane Doe <jane@example.org> (@jane)")\n'
     '(env "PATH" "/opt/bin:$PATH")\n'
     '(env "A" "1" "B" "\\"two words\\"" "C" "\'x y\'")'),
    ("continuations-keep-indent",
     "FROM x\nRUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning\n"
     "RUN echo hello  \\\n  world\nRUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\n",
     '(from "x")\n(run "echo hello  world  goodnight    moon  lightning")\n(run "echo hello    world")\n'
     '(run "echo hi   world  goodnight")'),
    ("comment-inside-continuation",
     "FROM x\nRUN echo hello \\\n# a comment\n  world\nRUN a \\\n    # indented comment\n    b\n",
     '(from "x")\n(run "echo hello   world")\n(run "a     b")'),
    ("empty-continuation-line",
     "FROM x\nRUN foo \\\n\nbar\n",
     '(from "x")\n(run "foo bar")'),
    ("json-forms",
     'FROM x\nCMD ["a", "b c"]\nENTRYPOINT [ "/bin/sh" , "-c" ]\nRUN ["echo","\\u00e9\\t"]\n'
     'CMD [not json\nCOPY ["a b", "c"]\nADD  [ "x", "/y z" ]\nVOLUME ["/v1", "/v2"]\nSHELL ["/bin/bash", "-c"]\n',
     '(from "x")\n(cmd "a" "b c")\n(entrypoint "/bin/sh" "-c")\n(run "echo" "é\\t")\n(cmd "[not json")\n'
     '(copy "a b" "c")\n(add "x" "/y z")\n(volume "/v1" "/v2")\n(shell "/bin/bash" "-c")'),
    ("shell-forms-and-words",
     "FROM x AS build\nCOPY a b  c/\nEXPOSE 80 443/tcp\nVOLUME /data /more\nUSER  me:grp \nWORKDIR /a b\n"
     "ARG A B=2 'C=3 4'\nSTOPSIGNAL SIGTERM\nMAINTAINER Someone <s@x>\n",
     '(from "x" "AS" "build")\n(copy "a" "b" "c/")\n(expose "80" "443/tcp")\n(volume "/data" "/more")\n'
     '(user "me:grp")\n(workdir "/a b")\n(arg "A" "B=2" "\'C=3 4\'")\n(stopsignal "SIGTERM")\n'
     '(maintainer "Someone <s@x>")'),
    ("flags",
     "FROM --platform=$BUILDPLATFORM x\nCOPY --from=build --chown=1:2 --chmod=755 /a /b\n"
     "RUN --mount=type=cache,target=/c --network=none make\nCOPY -- --weird /dst\n"
     "ADD --chown=\"a b\" src dst\n",
     '(from ["--platform=$BUILDPLATFORM"] "x")\n(copy ["--from=build" "--chown=1:2" "--chmod=755"] "/a" "/b")\n'
     '(run ["--mount=type=cache,target=/c" "--network=none"] "make")\n(copy "--weird" "/dst")\n'
     '(add ["--chown=a b"] "src" "dst")'),
    ("healthcheck",
     "FROM debian\nHEALTHCHECK\nHEALTHCHECK --interval=5s --timeout=3s --retries=1 \\\n  CMD /check.sh --quiet\n"
     "HEALTHCHECK CMD\nHEALTHCHECK   CMD   a b\nHEALTHCHECK --timeout=3s CMD [\"foo\"]\nHEALTHCHECK NONE\n",
     '(from "debian")\n(healthcheck)\n'
     '(healthcheck ["--interval=5s" "--timeout=3s" "--retries=1"] "CMD" "/check.sh --quiet")\n'
     '(healthcheck "CMD")\n(healthcheck "CMD" "a b")\n(healthcheck ["--timeout=3s"] "CMD" "foo")\n'
     '(healthcheck "NONE")'),
    ("onbuild",
     "FROM x\nONBUILD RUN echo hi\nONBUILD COPY --from=a /x /y\n",
     '(from "x")\n(onbuild (run "echo hi"))\n(onbuild (copy ["--from=a"] "/x" "/y"))'),
    ("case-insensitive-instructions",
     "from x\nRun echo 1\nenv A b\n",
     '(from "x")\n(run "echo 1")\n(env "A" "b")'),
    ("escape-backtick",
     "# escape=`\nFROM windows\nRUN dir c:\\ `\n  && echo done\nCOPY a `\n b\n",
     '(from "windows")\n(run "dir c:\\\\   && echo done")\n(copy "a" "b")'),
    ("escape-directive-after-comment-is-ignored",
     "# a comment first\n# escape=`\nFROM x\nENV P \\\n\\go\n",
     '(from "x")\n(env "P" "\\\\go")'),
    ("escaped-escape-is-not-continuation",
     "FROM x\nRUN echo a\\\\\nRUN echo b\n",
     '(from "x")\n(run "echo a\\\\\\\\")\n(run "echo b")'),
    ("trailing-blanks-after-continuation",
     "FROM x\nRUN a \\ \t\n b\n",
     '(from "x")\n(run "a  b")'),
    ("crlf",
     "FROM x\r\nRUN a \\\r\n b\r\nENV K=v\r\n",
     '(from "x")\n(run "a  b")\n(env "K" "v")'),
    ("bom-and-no-final-newline",
     "\ufeffFROM x\nRUN end",
     '(from "x")\n(run "end")'),
    ("continuation-at-eof",
     "FROM x\nRUN a \\",
     '(from "x")\n(run "a")'),
    ("unknown-instruction-kept-for-later-error",
     "FROM x\nFOO bar baz\n",
     '(from "x")\n(foo)'),
]


@pytest.mark.parametrize("name,text,expected", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden(name, text, expected):
    assert dump(text) == expected


def test_line_numbers():
    text = ("# comment\n\nFROM x\n\n# c\nRUN a \\\n  b \\\n  c\n\n"
            "COPY <<EOF /f\nline1\nline2\nEOF\nENV K=v\n")
    nodes = parse(text).nodes
    assert [(n.cmd, n.start_line, n.end_line) for n in nodes] == [
        ("from", 3, 3), ("run", 6, 8), ("copy", 10, 13), ("env", 14, 14)]


def test_directives():
    r = parse("# syntax=docker/dockerfile:1.7\n#  ESCAPE = `\n# check=skip=all\nFROM x\n")
    assert r.escape_token == "`"
    assert r.directive("syntax") == "docker/dockerfile:1.7"
    assert r.directive("check") == "skip=all"
    # unknown directive ends the directives; a later escape= is a comment
    r = parse("# foo=bar\n# escape=`\nFROM x\n")
    assert r.escape_token == "\\"
    # a blank line ends them
    r = parse("\n# escape=`\nFROM x\n")
    assert r.escape_token == "\\"
    # leading blanks before # are allowed
    r = parse("   # escape=`\nFROM x\n")
    assert r.escape_token == "`"


def test_duplicate_and_bad_directives():
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: only one escape parser directive can be used"):
        parse("# escape=`\n# escape=\\\nFROM x\n")
    with pytest.raises(DockerfileError, match=r"invalid escape token '\$' does not match ` or \\"):
        parse("# escape=$\nFROM x\n")


def test_empty_file():
    with pytest.raises(DockerfileError, match="file with no instructions"):
        parse("# only a comment\n\n")


def test_empty_continuation_warning():
    r = parse("FROM x\nRUN something \\\n\n    following \\\n\n    more\nRUN ok\n")
    assert r.nodes[1].original == "RUN something     following     more"
    assert len(r.warnings) == 1 and "Dockerfile:2: empty continuation line" in r.warnings[0]


def test_heredocs_extracted():
    text = """
FROM alpine
ENV NAME=me
USER <<INVALID
INVALID
RUN <<EMPTY
EMPTY
RUN 3<<EMPTY2
EMPTY2
RUN "<<NOHEREDOC"
RUN <<INDENT
\tfoo
\tbar
INDENT
RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT
RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2
RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND
RUN <<COMMENT
# internal comment
echo foo # trailing
COMMENT
RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT
COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2
COPY <<X <<Y /dest
Y
X
X
Y
RUN ["<<EOF"]
ONBUILD RUN <<EOT
echo on build
EOT
"""
    nodes = parse(text).nodes
    got = [(n.cmd, n.heredocs) for n in nodes[1:]]
    assert got == [
        ("env", ()),
        ("user", ()),
        ("invalid", ()),
        ("run", (Heredoc("EMPTY", ""),)),
        ("run", (Heredoc("EMPTY2", "", fd=3),)),
        ("run", ()),
        ("run", (Heredoc("INDENT", "\tfoo\n\tbar\n"),)),
        ("run", (Heredoc("UNINDENT", "\tbaz\n\tquux\n", chomp=True),)),
        ("run", (Heredoc("UNINDENT2", "\tbaz\n\tquux\n", chomp=True),)),
        ("run", (Heredoc("NOEXPAND", "\tdon't expand $NAME\n", expand=False, chomp=True),)),
        ("run", (Heredoc("COMMENT", "# internal comment\necho foo # trailing\n"),)),
        ("run", (Heredoc("MOUNT", "echo hello\n"),)),
        ("copy", (Heredoc("FILE1", "content 1\n"), Heredoc("FILE2", "content 2\n"))),
        ("copy", (Heredoc("X", "Y\n"), Heredoc("Y", "X\n"))),
        ("run", ()),
        ("onbuild", (Heredoc("EOT", "echo on build\n"),)),
    ]
    assert nodes[9].heredocs[0].text == "baz\nquux\n"


def test_unterminated_heredoc():
    with pytest.raises(DockerfileError) as ei:
        parse("FROM x\nRUN <<EOF\necho hi\n")
    e = ei.value
    assert e.line == 2 and e.instruction == "RUN"
    assert "unterminated heredoc" in str(e) and str(e).startswith("Dockerfile:2: RUN: ")


@pytest.mark.parametrize("word,name", [
    ("<<EOF", "EOF"), ("<<'EOF'", "EOF"), ('<<"EOF"', "EOF"), ("<<-EOF", "EOF"), ("<<-'EOF'", "EOF"),
    ('<<-"EOF"', "EOF"), ("<<E'O'F", "EOF"), ("3<<END", "END"),
])
def test_parse_heredoc_valid(word, name):
    h = parse_heredoc(word)
    assert h is not None and h.name == name


@pytest.mark.parametrize("word", ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF"])
def test_parse_heredoc_not(word):
    assert parse_heredoc(word) is None


@pytest.mark.parametrize("word", ["<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'])
def test_parse_heredoc_invalid(word):
    with pytest.raises(Exception):
        parse_heredoc(word)


def test_heredoc_expand_flag():
    assert parse_heredoc("<<EOF").expand is True
    assert parse_heredoc("<<'EOF'").expand is False
    assert parse_heredoc('<<"EOF"').expand is False
    assert parse_heredoc("<<E'O'F").expand is False


@pytest.mark.parametrize("line,names", [
    ("RUN <<EOF", ["EOF"]), ("RUN <<-EOF", ["EOF"]), ("RUN <<'EOF'", ["EOF"]), ("RUN 4<<EOF", ["EOF"]),
    ("RUN <<EOF <<EOF2", ["EOF", "EOF2"]), ("RUN '<<EOF'", []), ('RUN "<<EOF"', []),
    ("RUN cat <<EOF > /out", ["EOF"]), ("RUN python3 <<PY", ["PY"]),
])
def test_heredocs_from_line(line, names):
    assert [h.name for h in heredocs_from_line(line)] == names


def test_chomp():
    assert chomp_heredoc("\thello\n\t\tworld\n  x\n") == "hello\nworld\n  x\n"


@pytest.mark.parametrize("text,expected", [
    ("foo", ["foo"]), ("foo bar", ["foo", "bar"]), ("foo\\ bar", ["foo\\ bar"]), ("foo=bar", ["foo=bar"]),
    ("foo bar 'abc xyz'", ["foo", "bar", "'abc xyz'"]), ('foo bar "abc xyz"', ["foo", "bar", '"abc xyz"']),
    ("àöû", ["àöû"]), ('föo bàr "âbc xÿz"', ["föo", "bàr", '"âbc xÿz"']),
    ("a='' b", ["a=''", "b"]), ("'it\\'s'", ["'it\\'s'"]), ('"a\\"b" c', ['"a\\"b"', "c"]),
])
def test_parse_words(text, expected):
    assert parse_words(text, "\\") == expected


@pytest.mark.parametrize("line,rest,flags", [
    ("--from=a /x /y", "/x /y", ["--from=a"]),
    ("--a=1   --b=\"x y\" rest of it", "rest of it", ["--a=1", "--b=x y"]),
    ("--link src dst", "src dst", ["--link"]),
    ("-- --x y", " --x y", []),
    ("--a=\\\"q src", "src", ['--a="q']),
    ("--only", "", ["--only"]),
    ("-x y", "-x y", []),
    ("plain", "plain", []),
])
def test_extract_builder_flags(line, rest, flags):
    assert extract_builder_flags(line) == (rest, flags)


def test_json_with_non_strings_is_error():
    with pytest.raises(DockerfileError, match="arrays must be comprised of strings only"):
        parse('FROM x\nCMD ["a", 1]\n')


def test_error_names_file_line_and_instruction():
    with pytest.raises(DockerfileError) as ei:
        parse("FROM x\n\nENV onlykey\n", "ctx/Dockerfile.dev")
    e = ei.value
    assert str(e) == "ctx/Dockerfile.dev:3: ENV must have two arguments"
    assert e.line == 3 and e.instruction == "ENV"
    assert e.hint == "line 3: ENV onlykey"
    assert e.exit_code == 125


def test_non_utf8():
    with pytest.raises(DockerfileError, match="not valid UTF-8"):
        parse(b"FROM x\nRUN \xff\n")
