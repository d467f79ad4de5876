"""The Go text/template subset Ollama's TEMPLATEs use, with Go's semantics (trimming, scopes, and/or)."""

import pytest

from pet import gotemplate as g
from pet import templates

CONVO = [
    {"role": "system", "content": "You are PET."},
    {"role": "user", "content": "make this better: write a poem"},
    {"role": "assistant", "content": "You are a poet.\n\nBlocks added: WHO."},
    {"role": "user", "content": "shorter, café ☕ 😀"},
]


def test_trim_markers_and_comments():
    assert g.render("a  {{- 1 -}}  b", {}) == "a1b"
    assert g.render("a\n{{- /* note */ -}}\nb", {}) == "ab"
    assert g.render("a {{ 1 }} b", {}) == "a 1 b"
    assert g.render("{{-3}}", {}) == "-3"  # a number, not a trim marker (Go needs a space after the dash)


def test_control_flow_variables_and_functions():
    data = {"X": [1, {"A": "b"}], "E": [], "M": {"b": 2, "a": 1}, "S": "s", "T": True}
    src = ('{{ if or 0 "" }}x{{ else if eq 1 2 3 1 }}y{{ end }}|{{ print "q" 3 true }}|{{ len .X | print }}|'
           '{{ (index .X 1).A }}|{{ range .E }}z{{ else }}empty{{ end }}|'
           '{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}|{{ with .S }}[{{ . }}]{{ end }}|{{ json .M }}|'
           '{{ `raw` }}|{{ and .T "last" }}|{{ $n := 0 }}{{ range .X }}{{ $n = 7 }}{{ end }}{{ $n }}|'
           '{{ range $i, $x := .X }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ $i }}{{ end }}')
    assert g.render(src, data) == 'y|q3 true|2|b|empty|a=1;b=2;|[s]|{"a":1,"b":2}|raw|last|7|0'


@pytest.mark.parametrize("src,why", [
    ("{{ .nope }}", "can't evaluate field nope"),
    ("{{ if }}", "missing value"),
    ("{{ foo 1 }}", "function 'foo' not defined"),
    ("{{ range .X }}", "missing {{end}}"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ $undefined }}", "undefined variable"),
    ("{{ template \"x\" }}", "not supported"),
])
def test_errors_name_the_problem(src, why):
    with pytest.raises(g.GoTemplateError, match=why.replace("{", r"\{").replace("}", r"\}")):
        g.render(src, {"X": []})


def test_ollama_values_collate_as_ollama_does():
    v = g.ollama_values([{"role": "system", "content": "a"}, {"role": "user", "content": "b"},
                         {"role": "user", "content": "c"}])
    assert v["System"] == "a"
    assert [(m["Role"], m["Content"]) for m in v["Messages"]] == [("system", "a"), ("user", "b\n\nc")]


@pytest.mark.parametrize("family", ["gemma3", "chatml"])
def test_pet_ollama_templates_render_like_the_jinja_ones(family):
    """Text level (tokens are checked in test_export_ollama): BOS aside, the same string."""
    jinja = templates.BUILTIN[family]
    for convo in (CONVO, CONVO[1:], CONVO[1:2]):
        go = g.render(templates.OLLAMA[family], g.ollama_values(convo))
        assert jinja.bos_token + go == jinja.render(convo)
