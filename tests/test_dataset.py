"""pet.dataset: every import format, every rejection (with its row and field), export, stats, split."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pet import PetError
from pet import dataset as d

FIX = Path(__file__).resolve().parent / "fixtures" / "data"
FIXTURE = d.read_jsonl(FIX / "messages.jsonl")


def ex(user="write a haiku about rain", answer="You are a poet. Write a haiku about rain.", **tags):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **tags}


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def errors(res) -> list[str]:
    return [str(p) for p in res.errors]


# --- formats ---

@pytest.mark.parametrize("name,fmt", [("messages.jsonl", "messages"), ("alpaca.json", "alpaca"),
                                      ("sharegpt.json", "sharegpt"), ("chatml.jsonl", "chatml"),
                                      ("chatml.txt", "chatml"), ("prompts.csv", "csv")])
def test_every_format_is_detected_and_converted(name, fmt):
    res = d.parse_file(FIX / name)
    assert (res.format, res.errors, res.warnings) == (fmt, [], [])
    assert [[m["content"] for m in e["messages"] if m["role"] != "system"] for e in res.examples] == \
        [[m["content"] for m in e["messages"]] for e in FIXTURE]
    assert res.rows == ([1, 2, 3] if name.endswith((".jsonl", ".json")) else res.rows)


def test_system_turns_and_tags_survive_conversion():
    share = d.parse_file(FIX / "sharegpt.json").examples[0]["messages"][0]
    chat = d.parse_file(FIX / "chatml.jsonl").examples[0]["messages"][0]
    assert share == {"role": "system", "content": "Improve prompts."}
    assert chat == {"role": "system", "content": "You improve prompts."}
    csv_ex = d.parse_file(FIX / "prompts.csv").examples[1]
    assert (csv_ex["domain"], csv_ex["techniques"]) == ("business", ["role", "output_format"])
    assert d.parse_file(FIX / "alpaca.json").examples[2]["domain"] == "creative"
    assert d.parse_file(FIX / "prompts.csv").rows == [2, 7, 15]  # starting line of each multi-line record


def test_json_array_of_messages_and_wrapped_list():
    arr = json.dumps([ex(), ex("second request")]).encode()
    assert len(d.parse_bytes(arr, "x.json").examples) == 2
    wrapped = json.dumps({"examples": [ex(), ex("second request")]}, indent=2).encode()
    res = d.parse_bytes(wrapped, "x.json")
    assert (res.format, len(res.examples), res.errors) == ("messages", 2, [])


def test_alpaca_input_history_and_system():
    rec = {"instruction": "improve this prompt", "input": "summarize the article", "output": "You are an editor.",
           "system": "Be brief.", "history": [["earlier request", "earlier answer"]]}
    res = d.parse_bytes(jsonl(rec))
    assert res.examples[0]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "earlier request"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "improve this prompt\n\nsummarize the article"},
        {"role": "assistant", "content": "You are an editor."}]


@pytest.mark.parametrize("header", [["PROMPT", "Answer"], ["input", "output"], ["Request", "Completion"],
                                    ["user", "assistant"], ["question", "response"], [" Question ", "RESPONSE"]])
def test_csv_header_matching_is_case_insensitive(header):
    text = f"{header[0]},{header[1]}\nwrite a limerick,You are a comic poet. Write a limerick.\n"
    res = d.parse_bytes(text.encode(), "x.csv")
    assert (res.errors, len(res.examples)) == ([], 1)
    assert res.examples[0]["messages"][0]["content"] == "write a limerick"


def test_csv_without_answer_column_names_the_columns():
    res = d.parse_bytes(b"prompt,notes\nhi,there\n", "x.csv")
    assert errors(res) == ["row 1, header: no answer column found (columns: prompt, notes): choose it in the "
                           "preview (CLI: --answer-column NAME), or name it like answer, response, output, "
                           "improved prompt"]
    assert (res.columns, res.mapping) == (["prompt", "notes"], {"request": "prompt", "answer": None})


def test_csv_is_detected_without_extension_and_tab_separated():
    res = d.parse_bytes(b"prompt\tanswer\nwrite a limerick\tYou are a comic poet.\n", "upload")
    assert (res.format, res.errors, len(res.examples)) == ("csv", [], 1)


def test_user_override_forces_a_format():
    res = d.parse_file(FIX / "messages.jsonl", fmt="alpaca")
    assert res.format == "alpaca" and not res.examples
    assert errors(res)[0].startswith("row 1, instruction: missing (reading this file as alpaca; fields found: "
                                     "domain, messages, techniques)")
    with pytest.raises(PetError, match="unknown format 'yaml'"):
        d.parse_bytes(b"x", fmt="yaml")


def test_mixed_file_reads_as_its_majority_format_and_names_the_odd_row():
    res = d.parse_bytes(jsonl(ex(), ex("b"), {"instruction": "x", "output": "y"}))
    assert res.format == "messages"
    assert errors(res) == ["row 3, messages: missing (reading this file as messages; fields found: instruction, "
                           "output); check the row or choose another format"]


# --- rejections: each with its row and field ---

def test_empty_and_blank_files():
    assert errors(d.parse_bytes(b"")) == ["file, file: empty file: it holds no examples"]
    assert errors(d.parse_bytes(b"  \n\n\t\n")) == ["file, file: empty file: it holds no examples"]


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, bytes(300) + b"abc",
                                  b"GGUF\x03\x00\x00\x00" + b"\x00" * 64])
def test_binary_files(data):
    assert errors(d.parse_bytes(data, "x.jsonl")) == [
        "file, file: binary file (not text): upload a .jsonl, .json, .csv or .txt file"]


def test_utf16_and_non_utf8():
    utf16 = "\ufeff" + json.dumps(ex()) + "\n"
    assert errors(d.parse_bytes(utf16.encode("utf-16"))) == [
        "file, encoding: the file is UTF-16: save it as UTF-8 and upload again"]
    latin = jsonl(ex()) + '{"messages": "caf\xe9"}\n'.encode("latin-1")
    offset = len(jsonl(ex())) + len(b'{"messages": "caf')
    assert errors(d.parse_bytes(latin)) == [
        f"row 2, encoding: not UTF-8 text (byte 0xe9 at offset {offset}): save the file as UTF-8"]


def test_bad_json_names_every_line():
    res = d.parse_bytes(jsonl(ex(), '{"messages": [', ex("b"), "{'single': 'quotes'}"))
    # Each message is a whole sentence that says how to fix it (Python's own ends mid-sentence).
    assert errors(res) == [
        "row 2, json: bad JSON at line 2, column 15: a value is missing here (text in double quotes, a number, "
        "true, false, null, {...} or [...]); a trailing comma or a cut-off line does this.",
        "row 4, json: bad JSON at line 4, column 2: a field name must be in double quotes; single quotes and a "
        "comma before } are not JSON."]
    assert len(res.examples) == 2 and not res.ok
    arr = d.parse_bytes(b'[\n {"messages": []},\n {"messages": [}\n]', "x.json")
    assert errors(arr)[0].startswith("row 3, json: bad JSON at line 3, column 16: a value is missing here")


def test_missing_and_empty_answers():
    res = d.parse_bytes(jsonl({"messages": [{"role": "user", "content": "hi"}]},
                              ex(answer="   "),
                              {"instruction": "improve this", "input": ""},
                              {"instruction": "improve this", "output": ""}))
    assert errors(res) == [
        "row 1, messages: missing answer: the conversation must end with an assistant message",
        "row 2, messages[1].content: empty answer: write the text or delete the message",
        "row 3, messages: missing (reading this file as messages; fields found: input, instruction); check the "
        "row or choose another format",
        "row 4, messages: missing (reading this file as messages; fields found: instruction, output); check the "
        "row or choose another format"]
    alp = d.parse_bytes(jsonl({"instruction": "improve this", "input": ""}, {"instruction": "x", "output": ""}))
    assert errors(alp) == ["row 1, output: missing answer: add an `output`",
                           "row 2, output: empty answer: write the text or delete the message"]


def test_unknown_and_non_alternating_roles():
    res = d.parse_bytes(jsonl(
        {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]},
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"},
                      {"role": "assistant", "content": "c"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                      {"role": "assistant", "content": "c"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "alien", "value": "b"}]}))
    assert errors(res) == [
        "row 1, messages[1].role: unknown role 'bot': use system, user or assistant",
        "row 2, messages[0].role: expected 'user' here, got 'assistant': turns must alternate user/assistant, "
        "starting with user",
        "row 3, messages[1].role: a system message may only come first",
        "row 4, messages: missing (reading this file as messages; fields found: conversations); check the row or "
        "choose another format"]
    share = d.parse_bytes(jsonl({"conversations": [{"from": "human", "value": "a"}, {"from": "alien", "value": "b"}]}))
    assert errors(share) == ["row 1, conversations[1].from: unknown speaker 'alien': use human, gpt or system"]


def test_wrong_types():
    res = d.parse_bytes(jsonl(
        {"messages": "hello"}, {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},
        ex(domain=["a"]), ex(techniques="role"), ex(techniques=["role", 3]), "[1, 2]", "42",
        {"messages": [["user", "hi"]]}))
    assert errors(res) == [
        "row 1, messages: must be a list of {role, content} objects, got text",
        "row 2, messages[0].content: content must be text, got number",
        "row 3, domain: must be text, got list",
        "row 4, techniques: must be a list of text tags, got text",
        "row 5, techniques[1]: must be text, got number",
        "row 6: expected a JSON object, got list",
        "row 7: expected a JSON object, got number",
        "row 8, messages[0]: must be an object with role and content, got list"]


def test_nul_bytes_raw_and_escaped():
    raw = jsonl(ex()) + b'{"messages": "a\x00b"}\n' + jsonl(ex("other"))
    assert errors(d.parse_bytes(raw)) == ["row 2: contains a NUL byte (\\0): the file is damaged or not text"]
    esc = d.parse_bytes(jsonl(ex(answer="You are\x00 an editor.")))  # valid JSON, NUL inside the text
    assert errors(esc) == ["row 1, messages[1].content: contains a NUL byte (\\0): remove it"]


def test_pathological_nesting():
    bomb = b"[" * 100_000 + b"]" * 100_000
    assert errors(d.parse_bytes(bomb, "x.json")) == ["file, json: nested too deeply to read (limit 16 levels)"]
    line = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    assert errors(d.parse_bytes(jsonl(ex()) + line)) == ["row 2, json: nested too deeply to read (limit 16 levels)"]
    deep = {"messages": [{"role": "user", "content": "x", "meta": [[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]}]}
    assert errors(d.parse_bytes(jsonl(deep))) == [
        "row 1: nested more than 16 levels deep: not an example record"]


def test_example_over_the_length_limit():
    res = d.parse_bytes(jsonl(ex(answer="x" * (d.MAX_EXAMPLE_CHARS + 1))))
    assert errors(res) == [f"row 1, messages: example is {d.MAX_EXAMPLE_CHARS + 25:,} characters, over the limit "
                           f"of {d.MAX_EXAMPLE_CHARS:,}: shorten or split it"]


def test_file_over_the_size_limit(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_bytes(jsonl(*[ex(f"request {i}") for i in range(2000)]))
    res = d.parse_file(p, max_bytes=100_000)
    assert errors(res) == [f"file, file: file is {p.stat().st_size / 2**20:.1f} MiB, over the limit of 0 MiB: "
                           "split it into smaller files"]
    assert d.parse_file(p).ok


def test_every_problem_is_collected_not_just_the_first():
    res = d.parse_file(FIX / "bad.jsonl")
    assert [(p.row, p.field) for p in res.errors] == [
        (2, "messages[1].content"), (3, "messages[1].role"), (4, "messages[2].role"), (5, "messages"),
        (6, "messages[0].content"), (7, "json")]
    assert len(res.examples) == 1 and not res.ok


def test_chatml_problems():
    res = d.parse_bytes(jsonl({"text": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nunfinished"},
                              {"text": "junk <|im_start|>user\nhi<|im_end|><|im_start|>assistant\nok<|im_end|>"}))
    assert errors(res) == ["row 1, text turn 2: <|im_start|> without a matching <|im_end|>",
                           "row 2, text turn 1: text outside <|im_start|> ... <|im_end|> turns"]


# --- warnings ---

def test_duplicates_and_over_long_rows_are_warnings():
    long = ex("a long one", "word " * 800)
    res = d.parse_bytes(jsonl(ex(), ex("Write  a HAIKU about rain"), long))
    d.length_warnings(res, d.Lengths(), cutoff=512)
    assert res.ok and len(res.examples) == 3
    assert [str(w) for w in res.warnings] == [
        "row 2, messages: duplicate request: same first user turn as row 1",
        "row 3, messages: 1003 tokens (estimated), over the training cutoff of 512: the trainer will cut the end off"]


# --- export ---

def test_csv_export_neutralises_formulas_and_imports_back():
    rows = [ex("=HYPERLINK(\"http://x\")", "+1 then -2"), ex("@SUM(A1)", "-rm -rf", domain="=cmd")]
    text = d.export_text(rows, "csv")
    cells = list(csv.reader(io.StringIO(text)))
    assert cells[1][1:3] == ["'=HYPERLINK(\"http://x\")", "'+1 then -2"]
    assert cells[2][1:4] == ["'@SUM(A1)", "'-rm -rf", "'=cmd"]
    assert not any(c[:1] in "=+-@" and c for row in cells for c in row)
    back = d.parse_bytes(text.encode(), "x.csv")
    assert back.examples == [d.normalise(r) for r in rows]


@pytest.mark.parametrize("fmt", d.EXPORT_FORMATS)
def test_export_round_trips(tmp_path, fmt):
    rows = FIXTURE + [{"messages": [{"role": "system", "content": "Be brief."}, *ex()["messages"]],
                       "domain": "creative", "techniques": ["role"]}]
    path = d.export(rows, fmt, tmp_path / f"out.{fmt}")
    assert d.parse_file(path).examples == rows
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{fmt}"]  # no temp file left behind


def test_multi_turn_export():
    multi = {"messages": [*ex()["messages"], {"role": "user", "content": "shorter"},
                          {"role": "assistant", "content": "Write a haiku."}]}
    for fmt in ("jsonl", "sharegpt", "alpaca", "csv"):
        assert d.parse_bytes(d.export_text([multi], fmt).encode()).examples == [multi]
    # CSV: the earlier turns go in a `history` column only when some row has them
    text = d.export_text([ex(), multi], "csv")
    assert text.splitlines()[0].endswith(",history") and d.parse_bytes(text.encode()).examples == [ex(), multi]
    assert "history" not in d.export_text([ex()], "csv").splitlines()[0]


@pytest.mark.parametrize("cell, says", [('[["a"', "are not JSON"), ('[["a", 1]]', "list of [request, answer]"),
                                        ('{"a": "b"}', "list of [request, answer]")])
def test_csv_history_errors_name_row_and_column(cell, says):
    text = "prompt,answer,history\nwrite a poem,You are a poet.,\"" + cell.replace('"', '""') + "\"\n"
    res = d.parse_bytes(text.encode(), "x.csv")
    assert not res.examples and [(p.row, p.field) for p in res.errors] == [(2, "history")]
    assert says in res.errors[0].message


# --- stats and split ---

def test_stats_counts_and_distribution():
    rows = [ex("a", "x" * 40, domain="business", techniques=["role"]),
            ex("b", "x" * 400, domain="business", techniques=["role", "few_shot"]),
            ex("c", "x" * 4000)]
    st = d.stats(rows, d.Lengths(), cutoff=512)
    assert st["examples"] == 3 and st["train"] + st["heldout"] == 3
    assert st["domains"] == {"business": 2, "(none)": 1}
    assert st["techniques"] == {"role": 2, "few_shot": 1}
    tok = st["tokens"]
    assert (tok["min"], tok["median"], tok["max"], tok["over_cutoff"], tok["exact"]) == (11, 101, 1001, 1, False)
    assert sum(b["count"] for b in tok["histogram"]) == 3
    assert tok["histogram"][0] == {"from": 0, "to": 64, "count": 1}


def test_split_is_stable_and_ignores_order_and_spacing():
    rows = [ex(f"request number {i}") for i in range(400)]
    train, held = d.split(rows)
    assert 20 <= len(held) <= 60 and len(train) + len(held) == 400
    rev_train, rev_held = d.split(list(reversed(rows)) + [ex("a brand new one")])
    assert {d.example_key(e) for e in held} <= {d.example_key(e) for e in rev_held}
    assert all(d.is_heldout(ex(f"  REQUEST   number {i}")) == d.is_heldout(ex(f"request number {i}"))
               for i in range(400))
    assert d.is_heldout(ex("request number 0", answer="a different answer")) == d.is_heldout(rows[0])


# --- issue 8, item 16: complete JSON messages, recognised and chosen CSV columns, the good rows alone ---

@pytest.mark.parametrize("line", ['{"messages": [}', '{"a": "unclosed}', "{'a': 1}", '{"a": 1,}', '{"a" 1}',
                                  '{"a": 1} {"b": 2}', '{"a": "tab\there"}', '{"a": "\\q"}', '{"a": [1 2]}'])
def test_json_errors_are_whole_sentences(line):
    [p] = d.parse_bytes((line + "\n").encode(), "x.jsonl").errors
    text = str(p)
    assert text.startswith("row 1, json: bad JSON at line 1, column ") and text.endswith(".")
    assert not text.rstrip(".").endswith((" at", "starting at")), text  # Python's fragments, cut off mid-sentence
    assert len(text.split(": ", 2)[2]) > 30  # says what to fix, not just "Expecting value"


@pytest.mark.parametrize("header", [("Rough Request", "Better Prompt"), ("Question", "Reply"),
                                    ("user_message", "assistant_message"), ("Prompt", "Prompt (improved)"),
                                    ("Original prompt", "Rewritten prompt"), ("human", "gpt"),
                                    ("My Request", "Model Output")])
def test_common_csv_column_names_are_recognised(header):
    text = f'"{header[0]}","{header[1]}"\nwrite a limerick,You are a comic poet. Write a limerick.\n'
    res = d.parse_bytes(text.encode(), "x.csv")
    assert (res.errors, len(res.examples)) == ([], 1)
    assert res.mapping == {"request": header[0], "answer": header[1]}
    assert res.examples[0]["messages"] == [{"role": "user", "content": "write a limerick"},
                                           {"role": "assistant", "content": "You are a comic poet. Write a limerick."}]


def test_csv_columns_can_be_chosen():
    text = b"col1,col2,notes\nYou are a comic poet.,write a limerick,x\n"
    res = d.parse_bytes(text, "x.csv")
    assert not res.examples and res.columns == ["col1", "col2", "notes"]
    assert [p.field for p in res.errors] == ["header", "header"]
    chosen = d.parse_bytes(text, "x.csv", columns={"request": "col2", "answer": "col1"})
    assert chosen.ok and chosen.mapping == {"request": "col2", "answer": "col1"}
    assert chosen.examples[0]["messages"][0]["content"] == "write a limerick"
    # A choice overrides a recognised name; a wrong one is a clear error.
    swapped = d.parse_bytes(b"prompt,answer\na,b\n", "x.csv", columns={"request": "answer", "answer": "prompt"})
    assert swapped.examples[0]["messages"][0]["content"] == "b"
    assert "there is no column 'nope'" in str(d.parse_bytes(text, "x.csv", columns={"request": "nope"}).errors[0])
    # Confirming the recognised columns changes nothing (an Alpaca-style CSV still appends its input).
    alpaca = b"instruction,input,output\nsummarize,the report,You are an editor.\n"
    assert d.parse_bytes(alpaca, "x.csv", columns=d.parse_bytes(alpaca, "x.csv").mapping).examples == \
        d.parse_bytes(alpaca, "x.csv").examples
    assert d.parse_bytes(alpaca, "x.csv").examples[0]["messages"][0]["content"] == "summarize\n\nthe report"
    same = d.parse_bytes(text, "x.csv", columns={"request": "col1", "answer": "col1"})
    assert "the request and the answer are the same column" in str(same.errors[0])


def test_a_file_with_some_bad_rows_offers_its_good_rows():
    res = d.parse_file(FIX / "bad.jsonl")
    assert not res.ok and res.partly_ok
    assert (res.rows, res.bad_rows) == ([1], [2, 3, 4, 5, 6, 7])
    header_only = d.parse_bytes(b"a,b\nx,y\n", "x.csv")
    assert not header_only.partly_ok  # nothing could be read: no good rows to offer


def test_csv_keeps_the_text_tags_both_ways():
    rows = [ex("write a haiku", "You are a poet.", language="en", pov="student", split="heldout")]
    back = d.parse_bytes(d.export_text(rows, "csv").encode(), "x.csv")
    assert back.examples == [d.normalise(r) for r in rows]
