"""Go text/template with Docker's functions (rootless.cli.template), as --format uses it."""

import subprocess
import sys

import pytest

from rootless.cli.template import render, sprintf
from rootless.errors import UsageError

INSPECT = {
    "Id": "abc123", "Name": "/web", "Config": {"Env": ["A=1", "B=2"], "Cmd": None, "Labels": {"b": "2", "a": "1"}},
    "State": {"Running": True, "Status": "running", "Pid": 42, "ExitCode": 0, "Restarting": False},
    "Mounts": [{"Source": "/h/a", "Destination": "/a", "RW": True}, {"Source": "/h/b", "Destination": "/b",
                                                                      "RW": False}],
    "NetworkSettings": {"Networks": {"n2": {"IPAddress": "10.0.2.5"}, "n1": {"IPAddress": "10.0.1.5"}}},
    "Count": 3, "Ratio": 1.5, "Empty": "", "Names": ["web", "www"],
}


def r(tmpl, obj=INSPECT, **kw):
    return render(tmpl, obj, **kw)


@pytest.mark.parametrize("tmpl,want", [
    # fields, text, nil
    ("{{.Id}}", "abc123"),
    ("{{.ID}}", "abc123"),
    ("id={{.Id}} pid={{.State.Pid}}", "id=abc123 pid=42"),
    ("{{.Config.Cmd}}", "<no value>"),
    ("{{.Config.Cmd.Nope}}", "<no value>"),
    ("{{.Config.Env}}", "[A=1 B=2]"),
    ("{{.Config.Labels}}", "map[a:1 b:2]"),
    ("{{.State.Running}} {{.Ratio}} {{.Count}}", "true 1.5 3"),
    ("{{.}}" , None),
    ("a\\tb\\nc", "a\tb\nc"),
    # range
    ("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", "/h/a:/a /h/b:/b "),
    ("{{range $i, $m := .Mounts}}{{$i}}={{$m.Destination}};{{end}}", "0=/a;1=/b;"),
    ("{{range $m := .Mounts}}{{$m.RW}},{{end}}", "true,false,"),
    ("{{range $k, $v := .NetworkSettings.Networks}}{{$k}}:{{$v.IPAddress}} {{end}}", "n1:10.0.1.5 n2:10.0.2.5 "),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "10.0.1.5 10.0.2.5 "),
    ("{{range .Config.Cmd}}x{{else}}none{{end}}", "none"),
    ("{{range .Names}}{{if eq . \"www\"}}{{break}}{{end}}{{.}} {{end}}", "web "),
    ("{{range .Names}}{{if eq . \"web\"}}{{continue}}{{end}}{{.}}{{end}}", "www"),
    ("{{range .Names}}{{$.Id}}/{{.}} {{end}}", "abc123/web abc123/www "),
    ("{{range 3}}{{.}}{{end}}", "012"),
    # if / else if / else / with
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if .State.Restarting}}r{{else if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if not .State.Running}}down{{else}}up{{end}}", "up"),
    ("{{if .Empty}}x{{else}}empty{{end}}", "empty"),
    ("{{if and .State.Running (eq .State.Pid 42)}}yes{{end}}", "yes"),
    ("{{if or .Empty .Count}}{{or .Empty .Count}}{{end}}", "3"),
    ("{{with .State}}{{.Status}}/{{.Pid}}{{end}}", "running/42"),
    ("{{with .Config.Cmd}}{{.}}{{else}}no cmd{{end}}", "no cmd"),
    ("{{with $s := .State.Status}}{{$s}}{{end}}", "running"),
    # variables and pipelines
    ("{{$n := len .Mounts}}{{$n}} mounts", "2 mounts"),
    ("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
    ("{{.Name | upper}}", "/WEB"),
    ("{{.Name | printf \"%s!\" | upper}}", "/WEB!"),
    ("{{(index .Mounts 1).Destination}}", "/b"),
    ("{{len (index .Mounts 0)}}", "3"),
    # functions: Go's and Docker's
    ('{{index .Config.Labels "a"}}', "1"),
    ('{{index .Config.Labels "zz"}}', "<no value>"),
    ("{{index .Names 1}}", "www"),
    ('{{index .NetworkSettings.Networks "n1" "IPAddress"}}', "10.0.1.5"),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ("{{json .Mounts}}", '[{"Source":"/h/a","Destination":"/a","RW":true},{"Source":"/h/b","Destination":"/b",'
                         '"RW":false}]'),
    ('{{json "<é>"}}', '"<é>"'),
    ('{{join .Names ","}}', "web,www"),
    ('{{join (split "a:b:c" ":") "-"}}', "a-b-c"),
    ('{{split "a b" " "}}', "[a b]"),
    ("{{upper .Name}} {{lower \"ABC\"}} {{title \"hello big world\"}}", "/WEB abc Hello Big World"),
    ('{{pad "x" 2 3}}|{{pad "" 2 3}}|', "  x   ||"),
    ('{{truncate "abcdef" 3}} {{truncate "ab" 3}}', "abc ab"),
    ("{{len .Names}} {{len .Name}} {{len .Config.Labels}}", "2 4 2"),
    ('{{printf "%s-%d-%5s|%-4s|%q|%v|%x|%05.1f|%t|%%" .Name .Count "r" "l" "q" .Names 255 3.14159 true}}',
     '/web-3-    r|l   |"q"|[web www]|ff|003.1|true|%'),
    ('{{printf "%d"}}', "%!d(MISSING)"),
    ('{{printf "%d" "s"}}', "%!d(string=s)"),
    ('{{print "a" 1 2 "b"}}', "a1 2b"),
    ('{{println "a" 1}}', "a 1\n"),
    ('{{slice "abcdef" 1 3}} {{slice .Names 1}}', "bc [www]"),
    ("{{eq .Count 3}} {{ne .Count 3}} {{lt .Count 4}} {{le 3 3}} {{gt 1.5 .Ratio}} {{ge .Ratio 1.5}}",
     "true false true true false true"),
    ('{{eq .State.Status "exited" "running"}}', "true"),
    # whitespace trimming and comments
    ("a  {{- .Count -}}  b", "a3b"),
    ("{{/* a comment */}}x", "x"),
    ("a {{- /* trimmed */ -}} b", "ab"),
    ("{{ -3 }}", "-3"),
    ('{{"}}"}}', "}}"),
    ("{{`raw\\n`}}", "raw\\n"),
])
def test_render(tmpl, want):
    if want is None:
        assert r(tmpl).startswith("map[")
    else:
        assert r(tmpl) == want


def test_methods_of_the_top_object():
    labels = {"tier": "front"}
    item = {"ID": "x", "Labels": "tier=front"}
    methods = {"Label": lambda it, k: labels.get(k, "")}
    assert r('{{.Label "tier"}}/{{.Label "nope"}}/{{.ID}}', item, methods=methods) == "front//x"
    assert r('{{if .Label "tier"}}yes{{end}}', item, methods=methods) == "yes"
    with pytest.raises(UsageError, match="can't give argument"):
        r('{{.ID "x"}}', item, methods=methods)


@pytest.mark.parametrize("tmpl,msg", [
    ("{{.Nope}}", "can't evaluate field Nope"),
    ("{{.Names.First}}", "can't evaluate field First"),
    ("{{if .Id}}x", "without {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ("{{nope .Id}}", 'function "nope" not defined'),
    ("{{$x}}", "undefined variable: $x"),
    ("{{.Id", "unclosed action"),
    ('{{"abc}}', "unterminated quoted string"),
    ("{{upper}}", "wrong number of args for upper"),
    ("{{index .Names 5}}", "index out of range"),
    ("{{len .Count}}", "len of type int"),
    ("{{range .Count.X}}{{end}}", "can't evaluate field X"),
    ("{{range .Name}}{{end}}", "range can't iterate"),
    ("{{break}}", "outside {{range}}"),
    ("{{define \"x\"}}{{end}}", "not supported"),
    ("{{.Id | }}", "missing command after |"),
    ("{{(.Id}}", "unclosed left paren"),
    ("{{/* x }}", "unclosed comment"),
    ("{{lt .Name 3}}", "incompatible types"),
])
def test_errors_are_usage_errors(tmpl, msg):
    with pytest.raises(UsageError, match=msg.replace("(", r"\(").replace("|", r"\|").replace("{", r"\{")
                       .replace("}", r"\}").replace("$", r"\$")) as e:
        r(tmpl)
    assert e.value.message.startswith("template: ") and e.value.exit_code == 125


def test_sprintf_extra_arguments():
    assert sprintf("%s", ["a", 1]) == "a%!(EXTRA int=1)"


def test_not_imported_on_the_run_path():
    code = ("import sys, rootless.cli.main, rootless.cli.containers, rootless.cli.format; "
            "print('rootless.cli.template' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
