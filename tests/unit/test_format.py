import re
import pytest

from rootless.cli.format import output, render
from rootless.errors import UsageError

OBJ = {"Id": "abc123", "Names": ["web", "www"], "Labels": {"tier": "front"},
       "Config": {"Env": ["A=1", "B=2"], "Cmd": None}, "Running": True}


@pytest.mark.parametrize("tmpl,want", [
    ("{{.Id}}", "abc123"),
    ("{{.ID}}", "abc123"),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ('{{index .Labels "tier"}}', "front"),
    ('{{join .Names ","}}', "web,www"),
    ("{{.Running}}", "true"),
    ("{{len .Names}}", "2"),
    ("{{.Config.Cmd}}", "<no value>"),
    ("{{upper .Id}}-{{.Config.Env}}", "ABC123-[A=1 B=2]"),
    ("{{.Id}}\\t{{.Running}}", "abc123\ttrue"),
])
def test_render(tmpl, want):
    assert render(tmpl, OBJ) == want


def test_unknown_field_is_usage_error():
    with pytest.raises(UsageError, match="can't evaluate field Nope"):
        render("{{.Nope}}", OBJ)


def test_output_modes():
    items = [{"ID": "a", "Name": "x"}, {"ID": "b", "Name": "y"}]
    assert output(items, None, ["ID", "NAME"], lambda i: [i["ID"], i["Name"]]).splitlines() == \
        ["ID   NAME", "a    x", "b    y"]
    assert output(items, "{{.Name}}", [], None) == "x\ny"
    assert '"ID": "a"' in output(items, "json", [], None)
    assert output(items, None, [], None, quiet_field="ID", quiet=True) == "a\nb"
    assert output(items, "table {{.ID}}\\t{{.Name}}", [], None).splitlines()[0].split() == ["ID", "NAME"]


def test_table_headers_as_docker_names_them():
    items = [{"ID": "a", "RunningFor": "2 minutes ago", "CreatedAt": "x", "Names": "n"}]
    out = output(items, "table {{.ID}}\\t{{.RunningFor}}\\t{{.CreatedAt}}\\t{{.Names}}", [], None,
                 headers={"ID": "CONTAINER ID"})
    assert re.split(r"\s{2,}", out.splitlines()[0]) == ["CONTAINER ID", "CREATED", "CREATED AT", "NAMES"]


@pytest.mark.parametrize("tmpl,msg", [
    ("{{", "unclosed action"),
    ("{{.Id}} {{", "unclosed action"),
    ("x {{.Id", "unclosed action"),
    ("{{}}", "missing value"),
    ("{{ }}", "missing value"),
    ("{{nope .Id}}", 'function "nope" not defined'),
    ('{{index .Labels "tier}}', "unterminated quoted string"),
    ("{{join .Names ,}}", "unexpected ','"),
    ("{{/* never closed }}", "unclosed comment"),
])
def test_template_syntax_errors(tmpl, msg):
    with pytest.raises(UsageError, match=re.escape(msg)) as e:
        render(tmpl, OBJ)
    assert "\n" not in e.value.message
    # a syntax error is an error with nothing to render too
    with pytest.raises(UsageError, match=re.escape(msg)):
        output([], tmpl, [], None)
    with pytest.raises(UsageError, match=re.escape(msg)):
        output([], "table " + tmpl, [], None)


def test_argument_to_a_field_is_an_error_when_rendered():
    with pytest.raises(UsageError, match="can't give argument to non-function"):
        render("{{.Id .Names}}", OBJ)


def test_template_fields_only_of_objects():
    with pytest.raises(UsageError, match="can't evaluate field upper in type string"):
        render("{{.Id.upper}}", OBJ)


@pytest.mark.parametrize("tmpl,want", [
    ("a  {{- .Id -}}  b", "aabc123b"),
    ("{{/* a comment */}}x", "x"),
    ('{{join .Names "}}"}}', "web}}www"),
    ("{{`raw\\t`}}", "raw\\t"),
    ("}} {", "}} {"),
    ("{{-3}}", "-3"),
])
def test_template_trim_comments_quotes(tmpl, want):
    assert render(tmpl, OBJ) == want


def test_table_header_of_method_and_pipeline_columns():
    items = [{"ID": "a", "Names": "n"}]
    out = output(items, 'table {{.ID}}\\t{{.Label "tier"}}\\t{{.Names | upper}}', [], None,
                 methods={"Label": lambda it, k: "front"})
    assert out.splitlines()[0].split() == ["ID", "LABEL", "NAMES"]
    assert out.splitlines()[1].split() == ["a", "front", "N"]
