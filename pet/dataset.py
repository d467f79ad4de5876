"""Training examples: the {"messages": [...]} format, the fixed held-out split, loading.

An example is a dict: {"messages": [{"role", "content"}, ...], "domain": str, "techniques": [str]}
plus optional text tags (TEXT_TAGS): language, pov (whose point of view the request is written
from), style (how the request is put: terse, typos, pasted, decent_prompt, ask_first, multi_turn,
...), provenance (who wrote the example and how it was reviewed) and split ("train" or "heldout").
The held-out split is the example's own `split` tag when it has one (the shipped data is stratified
by domain that way), else a stable hash of its first user turn, so it never moves when rows are
added, edited elsewhere or reordered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pet.config import REPO_ROOT

SHIPPED = REPO_ROOT / "data" / "pet_examples.jsonl"
HELDOUT_BUCKETS = 10  # 1 bucket in 10 is held out: about 10%
TEXT_TAGS = ("language", "pov", "style", "provenance", "split")
SPLITS = ("train", "heldout")


def first_user(example: dict) -> str:
    return next((m["content"] for m in example.get("messages", []) if m.get("role") == "user"), "")


def example_key(example: dict) -> str:
    """Stable identity of an example for the split: its normalised first user turn."""
    text = " ".join(first_user(example).lower().split())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_heldout(example: dict) -> bool:
    if example.get("split") in SPLITS:
        return example["split"] == "heldout"
    return int(example_key(example)[:8], 16) % HELDOUT_BUCKETS == 0


def split(examples: list[dict]) -> tuple[list[dict], list[dict]]:
    train = [e for e in examples if not is_heldout(e)]
    held = [e for e in examples if is_heldout(e)]
    return train, held


def examples_sha256(examples: list[dict]) -> str:
    """SHA-256 of the exact examples (messages only, in order) a run trains on."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e["messages"], ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


# --------------------------------------------------------------------------------------------
# Import: format detection, conversion to {"messages": [...]}, validation that collects every
# problem with its row and field. Nothing here writes anywhere; the datastore saves versions.
# --------------------------------------------------------------------------------------------

import csv
import io
import os
import re
import statistics
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pet import PetError
from pet.files import write_atomic  # noqa: F401  (pet/commands/train.py imports it from here)

FORMATS = ("messages", "alpaca", "sharegpt", "chatml", "csv")
EXPORT_FORMATS = ("jsonl", "csv", "alpaca", "sharegpt")
ROLES = ("system", "user", "assistant")
MAX_FILE_BYTES = 50 * 2**20  # an upload larger than this is refused before it is read
MAX_EXAMPLE_CHARS = 20_000  # one example longer than this is an error, not a warning
MAX_DEPTH = 16  # a real record nests 4 levels deep; anything near this is an attack or a bug
# Tokens: the one training cutoff. The trainer's default max_seq_len is this number, and it counts the whole
# conversation as the trainer renders it, the tier's system prompt included; the Data tab and `pet data` warn
# against the same number, measured the same way (Lengths).
MAX_SEQ_LEN = 768

# CSV header names read as the request and the answer (compared lower-cased, punctuation as "_"); a header
# that is none of these is still recognised by its words (REQUEST_WORDS, ANSWER_WORDS), and the Data tab
# lets the user pick the two columns by hand.
PROMPT_COLUMNS = ("prompt", "input", "question", "request", "user", "instruction", "query", "prompts", "inputs",
                  "questions", "requests", "user_message", "user_input", "human", "rough_prompt", "rough_request",
                  "original_prompt", "raw_prompt")
ANSWER_COLUMNS = ("answer", "output", "response", "completion", "assistant", "answers", "outputs", "responses",
                  "completions", "reply", "target", "gpt", "bot", "assistant_message", "improved_prompt",
                  "better_prompt", "rewritten_prompt", "enhanced_prompt", "result")
REQUEST_WORDS = ("request", "question", "prompt", "instruction", "query", "input", "user", "ask")
ANSWER_WORDS = ("answer", "response", "output", "completion", "reply", "improved", "better", "rewritten",
                "rewrite", "enhanced", "assistant", "result")
SYSTEM_COLUMNS = ("system", "system_prompt")
DOMAIN_COLUMNS = ("domain", "category")
TECHNIQUE_COLUMNS = ("techniques", "technique", "tags")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BINARY_MAGIC = (b"\x89PNG", b"%PDF", b"PK\x03\x04", b"GGUF", b"\x7fELF", b"\xff\xd8\xff", b"GIF8", b"\x1f\x8b")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in an input: row (1-based line or record; None = the file)."""

    row: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = "file" if self.row is None else f"row {self.row}"
        return f"{where}, {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_dict(self) -> dict:
        return {"row": self.row, "field": self.field, "message": self.message}


class DatasetError(PetError):
    """Examples that cannot be imported or saved; `.problems` lists every one of them."""

    def __init__(self, problems: list[Problem], what: str = "examples"):
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{what}: {len(problems)} problem(s), nothing was written:\n{shown}{more}")


@dataclass
class ParseResult:
    format: str
    examples: list[dict] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # the source row of each example
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # a CSV's header
    mapping: dict = field(default_factory=dict)  # a CSV's {"request": column, "answer": column} (None: not found)

    @property
    def partly_ok(self) -> bool:
        """Some rows are bad, but each problem belongs to one row: the good rows can be imported on their own."""
        return bool(self.examples) and bool(self.errors) and \
            all(p.row is not None and p.field != "header" for p in self.errors)

    @property
    def bad_rows(self) -> list[int]:
        """Rows with an error (None = a problem with the whole file)."""
        return sorted({p.row for p in self.errors if p.row is not None})

    @property
    def ok(self) -> bool:
        """Importable: at least one example and no errors (warnings are allowed)."""
        return not self.errors and bool(self.examples)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "format": self.format, "examples": len(self.examples),
                "errors": [p.as_dict() for p in self.errors], "warnings": [p.as_dict() for p in self.warnings]}


def _type(v) -> str:
    return {dict: "object", list: "list", str: "text", bool: "true/false", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


def _msg_field(i: int, key: str) -> str:
    return f"messages[{i}].{key}"


def validate_example(ex, row: int | None = None, where: Callable[[int, str], str] = _msg_field) -> list[Problem]:
    """Every problem with one example in PET's format. `where(i, key)` names message i's field as the
    source file calls it (an Alpaca row says `output`, not `messages[1].content`)."""
    out: list[Problem] = []
    if not isinstance(ex, dict):
        return [Problem(row, "", f"expected an object with `messages`, got {_type(ex)}")]
    msgs = ex.get("messages")
    if msgs is None:
        return [Problem(row, "messages", "missing: add a list of {role, content} messages")]
    if not isinstance(msgs, list):
        return [Problem(row, "messages", f"must be a list of {{role, content}} objects, got {_type(msgs)}")]
    if not msgs:
        return [Problem(row, "messages", "empty conversation: add a user message and an assistant answer")]
    expect = "user"
    total = 0
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            out.append(Problem(row, f"messages[{i}]", f"must be an object with role and content, got {_type(m)}"))
            continue
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str):
            out.append(Problem(row, where(i, "role"), "missing role" if role is None else
                               f"role must be text, got {_type(role)}"))
            role = None
        elif role not in ROLES:
            out.append(Problem(row, where(i, "role"), f"unknown role {role!r}: use system, user or assistant"))
            role = None
        out += [Problem(row, where(i, "content"), msg) for msg in _content_problems(content, role)]
        total += len(content) if isinstance(content, str) else 0
        if role == "system":
            if i != 0:
                out.append(Problem(row, where(i, "role"), "a system message may only come first"))
        elif role is not None:
            if role != expect:
                out.append(Problem(row, where(i, "role"), f"expected {expect!r} here, got {role!r}: turns must "
                                   "alternate user/assistant, starting with user"))
            expect = "assistant" if role == "user" else "user"
        elif role is None:
            expect = "assistant" if expect == "user" else "user"
    last = msgs[-1]
    if isinstance(last, dict) and last.get("role") in ("user", "system"):
        out.append(Problem(row, "messages", "missing answer: the conversation must end with an assistant message"))
    if total > MAX_EXAMPLE_CHARS:
        out.append(Problem(row, "messages", f"example is {total:,} characters, over the limit of "
                           f"{MAX_EXAMPLE_CHARS:,}: shorten or split it"))
    return out + _tag_problems(ex, row)


def _content_problems(content, role: str | None) -> list[str]:
    """What is wrong with one message's content (the caller names the field as the file calls it)."""
    if not isinstance(content, str):
        return ["missing content" if content is None else f"content must be text, got {_type(content)}"]
    out = []
    if "\x00" in content:
        out.append("contains a NUL byte (\\0): remove it")
    if not content.strip():
        kind = {"assistant": "empty answer", "user": "empty request"}.get(role, "empty text")
        out.append(f"{kind}: write the text or delete the message")
    return out


def _tag_problems(ex: dict, row: int | None) -> list[Problem]:
    """An example's tags: domain and the other text tags are text, techniques a list of text, split a known one."""
    out = []
    if "domain" in ex and ex["domain"] is not None and not isinstance(ex["domain"], str):
        out.append(Problem(row, "domain", f"must be text, got {_type(ex['domain'])}"))
    tech = ex.get("techniques")
    if tech is not None:
        if not isinstance(tech, list):
            out.append(Problem(row, "techniques", f"must be a list of text tags, got {_type(tech)}"))
        else:
            for j, t in enumerate(tech):
                if not isinstance(t, str):
                    out.append(Problem(row, f"techniques[{j}]", f"must be text, got {_type(t)}"))
    for tag in TEXT_TAGS:
        if ex.get(tag) is not None and not isinstance(ex[tag], str):
            out.append(Problem(row, tag, f"must be text, got {_type(ex[tag])}"))
    if isinstance(ex.get("split"), str) and ex["split"].strip() and ex["split"].strip() not in SPLITS:
        out.append(Problem(row, "split", f"must be one of {', '.join(SPLITS)}, got {ex['split']!r}"))
    return out


def normalise(ex: dict) -> dict:
    """The stored shape: messages as {role, content} only, tags stripped, unknown keys dropped."""
    out = {"messages": [{"role": m["role"], "content": m["content"]} for m in ex["messages"]]}
    if ex.get("domain"):
        out["domain"] = ex["domain"].strip()
    tech = [t.strip() for t in ex.get("techniques") or [] if t.strip()]
    if tech:
        out["techniques"] = tech
    for tag in TEXT_TAGS:
        if isinstance(ex.get(tag), str) and ex[tag].strip():
            out[tag] = ex[tag].strip()
    return out


def validate_examples(examples: list) -> list[Problem]:
    """Problems across a list of examples (row = 1-based position)."""
    if not isinstance(examples, list):
        return [Problem(None, "", f"expected a list of examples, got {_type(examples)}")]
    out = []
    for i, ex in enumerate(examples, 1):
        out.extend(validate_example(ex, i))
    return out


def duplicate_warnings(examples: list[dict], rows: list[int]) -> list[Problem]:
    seen: dict[str, int] = {}
    out = []
    for ex, row in zip(examples, rows):
        k = example_key(ex)
        if k in seen:
            out.append(Problem(row, "messages", f"duplicate request: same first user turn as row {seen[k]}"))
        else:
            seen[k] = row
    return out


def _depth(obj) -> int:
    """Nesting depth, iteratively (a recursive walk is what a pathological file would crash)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (list, dict)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


# --- converters: one source record -> (example or None, problems) ---

def _from_messages(r: dict, row: int):
    return {k: r[k] for k in ("messages", "domain", "techniques", *TEXT_TAGS) if k in r}, _msg_field


def _from_sharegpt(r: dict, row: int):
    conv = r.get("conversations")
    if not isinstance(conv, list):
        return None, [Problem(row, "conversations", "missing" if conv is None else
                              f"must be a list of {{from, value}} objects, got {_type(conv)}")]
    msgs, problems, src = [], [], []
    sys_text = r.get("system")
    if isinstance(sys_text, str) and sys_text.strip():
        msgs.append({"role": "system", "content": sys_text})
        src.append("system")
    for j, turn in enumerate(conv):
        if not isinstance(turn, dict):
            problems.append(Problem(row, f"conversations[{j}]",
                                    f"must be an object with from and value, got {_type(turn)}"))
            continue
        who = turn.get("from")
        role = SHAREGPT_ROLES.get(who.lower()) if isinstance(who, str) else None
        if role is None:
            problems.append(Problem(row, f"conversations[{j}].from", "missing" if who is None else
                                    f"unknown speaker {who!r}: use human, gpt or system"))
            role = "?"
        msgs.append({"role": role, "content": turn.get("value")})
        src.append(f"conversations[{j}]")
    if problems:
        return None, problems
    ex = {"messages": msgs, **{k: r[k] for k in ("domain", "techniques", *TEXT_TAGS) if k in r}}
    return ex, lambda i, k: src[i] if src[i] == "system" else f"{src[i]}.{'from' if k == 'role' else 'value'}"


def _from_alpaca(r: dict, row: int):
    problems = []
    for k in ("instruction", "input", "output", "system"):
        if k in r and r[k] is not None and not isinstance(r[k], str):
            problems.append(Problem(row, k, f"must be text, got {_type(r[k])}"))
    if "output" not in r or r["output"] is None:
        problems.append(Problem(row, "output", "missing answer: add an `output`"))
    if "instruction" not in r or r["instruction"] is None:
        problems.append(Problem(row, "instruction", "missing: add an `instruction`"))
    hist = r.get("history") or []
    if not isinstance(hist, list) or not all(isinstance(h, list) and len(h) == 2 for h in hist):
        problems.append(Problem(row, "history", "must be a list of [request, answer] pairs"))
    if problems:
        return None, problems
    msgs, src = [], []
    if r.get("system"):
        msgs.append({"role": "system", "content": r["system"]})
        src.append(("system", "system"))
    for j, (q, a) in enumerate(hist):
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        src += [(f"history[{j}][0]",) * 2, (f"history[{j}][1]",) * 2]
    user = r["instruction"]
    if (r.get("input") or "").strip():
        user = f"{user}\n\n{r['input']}"
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
    src += [("instruction", "instruction"), ("output", "output")]
    ex = {"messages": msgs, **{k: r[k] for k in ("domain", "techniques", *TEXT_TAGS) if k in r}}
    return ex, lambda i, k: src[i][0]


CHATML_TURN = re.compile(r"<\|im_start\|>([^\n<]*)\n?(.*?)<\|im_end\|>", re.S)


def chatml_messages(text: str, row: int, fld: str = "text"):
    """Split one ChatML conversation into messages; text outside the turns is an error, not dropped."""
    msgs, problems, pos = [], [], 0
    for j, m in enumerate(CHATML_TURN.finditer(text)):
        if text[pos:m.start()].strip():
            problems.append(Problem(row, f"{fld} turn {j + 1}", "text outside <|im_start|> ... <|im_end|> turns"))
        if "<|im_start|>" in m.group(2):
            problems.append(Problem(row, f"{fld} turn {j + 1}", "<|im_start|> without a matching <|im_end|>"))
        msgs.append({"role": m.group(1).strip(), "content": m.group(2).strip()})
        pos = m.end()
    rest = text[pos:]
    if "<|im_start|>" in rest:
        problems.append(Problem(row, f"{fld} turn {len(msgs) + 1}", "<|im_start|> without a matching <|im_end|>"))
    elif rest.strip():
        problems.append(Problem(row, fld, "text after the last <|im_end|>"))
    if not msgs and not problems:
        problems.append(Problem(row, fld, "no <|im_start|>role ... <|im_end|> turns found"))
    return msgs, problems


def _from_chatml(r: dict, row: int):
    text = r.get("text")
    if not isinstance(text, str):
        return None, [Problem(row, "text", "missing" if text is None else f"must be text, got {_type(text)}")]
    msgs, problems = chatml_messages(text, row)
    if problems:
        return None, problems
    ex = {"messages": msgs, **{k: r[k] for k in ("domain", "techniques", *TEXT_TAGS) if k in r}}
    return ex, lambda i, k: f"text turn {i + 1}" + (" role" if k == "role" else "")


CONVERTERS = {"messages": _from_messages, "sharegpt": _from_sharegpt, "alpaca": _from_alpaca, "chatml": _from_chatml}
KEY_FIELD = {"messages": "messages", "sharegpt": "conversations", "alpaca": "instruction", "chatml": "text"}


def guess_record_format(r) -> str | None:
    if not isinstance(r, dict):
        return None
    if "messages" in r:
        return "messages"
    if "conversations" in r:
        return "sharegpt"
    if "instruction" in r or ("output" in r and "input" in r):
        return "alpaca"
    if isinstance(r.get("text"), str) and "<|im_start|>" in r["text"]:
        return "chatml"
    return None


def _add(res: ParseResult, raw, row: int, fmt: str) -> None:
    if not isinstance(raw, dict):
        res.errors.append(Problem(row, "", f"expected a JSON object, got {_type(raw)}"))
        return
    d = _depth(raw)
    if d > MAX_DEPTH:
        res.errors.append(Problem(row, "", f"nested more than {MAX_DEPTH} levels deep: not an example record"))
        return
    if KEY_FIELD[fmt] not in raw and not (fmt == "alpaca" and "output" in raw):
        found = ", ".join(sorted(map(str, raw))) or "none"
        res.errors.append(Problem(row, KEY_FIELD[fmt], f"missing (reading this file as {fmt}; fields found: "
                                  f"{found}); check the row or choose another format"))
        return
    ex, where = CONVERTERS[fmt](raw, row)
    if ex is None:
        res.errors.extend(where)
        return
    problems = validate_example(ex, row, where)
    if problems:
        res.errors.extend(problems)
    else:
        res.examples.append(normalise(ex))
        res.rows.append(row)


def _records(res: ParseResult, records: list[tuple[int, object]], fmt: str) -> None:
    if fmt == "auto":
        votes = Counter(g for _, r in records if (g := guess_record_format(r)))
        if not votes:
            keys = sorted({str(k) for _, r in records[:20] if isinstance(r, dict) for k in r})
            res.errors.append(Problem(None, "format", "no record looks like an example (fields found: "
                                      f"{', '.join(keys) or 'none'}); expected messages, conversations, "
                                      "instruction/output or a ChatML text: choose the format explicitly"))
            return
        fmt = votes.most_common(1)[0][0]
    res.format = fmt
    for row, raw in records:
        _add(res, raw, row, fmt)


# Python's JSON messages are fragments ("Unterminated string starting at", "Expecting value"): each
# becomes a whole sentence that says what is wrong and how to fix it.
_JSON_HELP = {
    "Expecting value": "a value is missing here (text in double quotes, a number, true, false, null, {...} or "
                       "[...]); a trailing comma or a cut-off line does this",
    "Expecting ',' delimiter": "a comma is missing between two items, or the line ends before its } or ]",
    "Expecting ':' delimiter": "a colon (:) is missing after a field name",
    "Expecting property name enclosed in double quotes": "a field name must be in double quotes; single quotes "
                                                         "and a comma before } are not JSON",
    "Unterminated string starting at": "a text value that starts here is never closed with a double quote",
    "Invalid control character at": "a raw tab or line break inside a text value: write it as \\t or \\n",
    "Invalid \\escape": "an unknown backslash escape inside a text value: write a backslash as \\\\",
    "Invalid \\uXXXX escape": "a \\u escape needs four hex digits",
    "Extra data": "more text after the end of the JSON value: put one record per line (JSONL) or wrap the "
                  "records in [...]",
}


def json_error_text(e: json.JSONDecodeError, line: int | None = None) -> str:
    """A JSON syntax error as one complete sentence: where, what is wrong, what to do."""
    why = _JSON_HELP.get(e.msg, f"{e.msg.rstrip(': ')}; check the quotes, commas and brackets")
    return f"bad JSON at line {line or e.lineno}, column {e.colno}: {why}."


def _json_problem(e: json.JSONDecodeError, row: int | None = None) -> Problem:
    return Problem(row if row is not None else e.lineno, "json", json_error_text(e))


def _parse_json_family(res: ParseResult, text: str, fmt: str) -> None:
    stripped = text.lstrip()
    whole = None
    if stripped.startswith("[") or "\n" not in stripped.strip():
        try:
            whole = json.loads(text)
        except RecursionError:
            res.errors.append(Problem(None, "json", f"nested too deeply to read (limit {MAX_DEPTH} levels)"))
            return
        except json.JSONDecodeError as e:
            if stripped.startswith("["):
                res.errors.append(_json_problem(e))
                return
    else:
        try:  # a pretty-printed single object or {"examples": [...]}
            whole = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            whole = None
    if isinstance(whole, dict):
        lists = [v for v in whole.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if guess_record_format(whole) is None and len(lists) == 1:
            whole = lists[0]
        else:
            whole = [whole]
    if isinstance(whole, list):
        _records(res, [(i, r) for i, r in enumerate(whole, 1)], fmt)
        return
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "\x00" in line:
            res.errors.append(Problem(n, "", "contains a NUL byte (\\0): the file is damaged or not text"))
            continue
        try:
            records.append((n, json.loads(line)))
        except RecursionError:
            res.errors.append(Problem(n, "json", f"nested too deeply to read (limit {MAX_DEPTH} levels)"))
        except json.JSONDecodeError as e:
            res.errors.append(Problem(n, "json", json_error_text(e, n)))
    if records:
        _records(res, records, fmt)


def _parse_chatml_text(res: ParseResult, text: str) -> None:
    """A plain ChatML transcript: conversations are separated by a blank line (or start at a system turn)."""
    res.format = "chatml"
    starts = [0] + [m.end() for m in re.finditer(r"<\|im_end\|>[ \t]*\n[ \t]*\n\s*(?=<\|im_start\|>)", text)]
    starts += [m.start() for m in re.finditer(r"(?<=\n)<\|im_start\|>system\b", text)]
    starts = sorted(set(starts))
    for k, s in enumerate(starts):
        chunk = text[s: starts[k + 1] if k + 1 < len(starts) else len(text)]
        if not chunk.strip():
            continue
        row = text.count("\n", 0, s + len(chunk) - len(chunk.lstrip())) + 1
        if "\x00" in chunk:
            res.errors.append(Problem(row, "", "contains a NUL byte (\\0): the file is damaged or not text"))
            continue
        msgs, problems = chatml_messages(chunk, row)
        if problems:
            res.errors.extend(problems)
            continue
        _add(res, {"text": chunk}, row, "chatml")


def _norm(h: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", h.strip().lower()).strip("_")


def _match(header: list[str], names: tuple[str, ...]) -> int | None:
    low = [_norm(h) for h in header]
    for name in names:
        if name in low:
            return low.index(name)
    return None


def guess_columns(header: list[str]) -> dict[str, int | None]:
    """The request and answer columns of a CSV header: a known name first, else a header whose words say
    so ("Rough request", "Prompt (improved)"); answer words win, since "better prompt" names an answer."""
    words = [set(_norm(h).split("_")) for h in header]
    req, ans = _match(header, PROMPT_COLUMNS), _match(header, ANSWER_COLUMNS)
    if ans is None or ans == req:
        ans = next((i for i, w in enumerate(words) if w & set(ANSWER_WORDS) and i != req), None)
    if req is None or req == ans:
        req = next((i for i, w in enumerate(words) if w & set(REQUEST_WORDS) and not w & set(ANSWER_WORDS)
                    and "system" not in w and i != ans), None)
    return {"request": req, "answer": ans}


def _unneutralise(cell: str) -> str:
    """Undo PET's own CSV export guard ('=x -> =x) so an export imports back unchanged."""
    return cell[1:] if len(cell) > 1 and cell[0] == "'" and cell[1] in FORMULA_START else cell


def _parse_csv(res: ParseResult, text: str, columns: dict | None = None) -> None:
    res.format = "csv"
    # The header line decides the delimiter: csv.Sniffer guesses wrong on multi-line quoted answers.
    first = text.split("\n", 1)[0]
    delim = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader)
    except (csv.Error, StopIteration) as e:
        res.errors.append(Problem(1, "header", f"cannot read the CSV header: {e}"))
        return
    res.columns = [h.strip() for h in header]
    found = _csv_columns(res, header, columns)
    if found is None:
        return
    cols, inp = found
    while True:
        row = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            res.errors.append(Problem(row, "csv", f"cannot read this row: {e}"))
            break
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            res.errors.append(Problem(row, "", f"{len(cells)} cells, but the header has {len(header)} columns"))
            continue
        if any("\x00" in c for c in cells):
            res.errors.append(Problem(row, "", "contains a NUL byte (\\0): the file is damaged or not text"))
            continue
        _csv_row(res, header, cols, inp, [_unneutralise(c) for c in cells], row)


def _csv_columns(res: ParseResult, header: list[str], columns: dict | None) -> tuple[dict, int | None] | None:
    """Which column holds what: {prompt, answer, system, domain, techniques} -> index (None: absent), and an
    Alpaca-style input column. The user's choice (`columns`) wins over the guess. None (with the problem in
    res.errors) when the request or the answer column is missing."""
    guessed = guess_columns(header)
    cols = {k: _match(header, names) for k, names in (("system", SYSTEM_COLUMNS), ("domain", DOMAIN_COLUMNS),
                                                     ("techniques", TECHNIQUE_COLUMNS))}
    cols["prompt"], cols["answer"] = guessed["request"], guessed["answer"]
    inp = _match(header, ("input",))
    if cols["prompt"] == inp and _match(header, ("instruction",)) is not None:
        cols["prompt"] = _match(header, ("instruction",))  # Alpaca-style CSV: instruction + input
    else:
        inp = None
    for key, want in (("prompt", (columns or {}).get("request")), ("answer", (columns or {}).get("answer"))):
        if want:  # chosen by the user: exactly that column
            if want.strip() not in res.columns:
                res.errors.append(Problem(1, "header", f"there is no column {want!r} (columns: "
                                          f"{', '.join(res.columns) or 'none'})"))
                return None
            if cols[key] != res.columns.index(want.strip()):  # another column than recognised: read it alone
                cols[key] = res.columns.index(want.strip())
                inp = None
    if cols["prompt"] is not None and cols["prompt"] == cols["answer"]:
        res.errors.append(Problem(1, "header", f"the request and the answer are the same column "
                                  f"({header[cols['prompt']]!r}): choose two different columns"))
        return None
    res.mapping = {"request": None if cols["prompt"] is None else res.columns[cols["prompt"]],
                   "answer": None if cols["answer"] is None else res.columns[cols["answer"]]}
    for key, label, examples in (("prompt", "request", "prompt, question, request, instruction"),
                                 ("answer", "answer", "answer, response, output, improved prompt")):
        if cols[key] is None:
            res.errors.append(Problem(1, "header", f"no {label} column found (columns: "
                                      f"{', '.join(res.columns) or 'none'}): choose it in the preview (CLI: "
                                      f"--{label}-column NAME), or name it like {examples}"))
    if cols["prompt"] is None or cols["answer"] is None:
        return None
    cols["history"] = _match(header, ("history",))
    cols["tags"] = {t: i for t in TEXT_TAGS if (i := _match(header, (t,))) is not None}
    return cols, inp


def _csv_row(res: ParseResult, header: list[str], cols: dict, inp: int | None, cells: list[str], row: int) -> None:
    """One CSV row as an example (or its problems, by the column they came from) added to res."""
    user = cells[cols["prompt"]]
    if inp is not None and cells[inp].strip():
        user = f"{user}\n\n{cells[inp]}"
    msgs, src = [], []
    if cols["system"] is not None and cells[cols["system"]].strip():
        msgs.append({"role": "system", "content": cells[cols["system"]]})
        src.append(header[cols["system"]])
    hist = cols["history"]
    if hist is not None and cells[hist].strip():
        pairs = _csv_history(cells[hist], row, header[hist], res)
        if pairs is None:
            return
        for q, a in pairs:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            src += [header[hist]] * 2
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": cells[cols["answer"]]}]
    src += [header[cols["prompt"]], header[cols["answer"]]]
    ex = {"messages": msgs}
    if cols["domain"] is not None:
        ex["domain"] = cells[cols["domain"]]
    if cols["techniques"] is not None:
        ex["techniques"] = [t for t in re.split(r"[;,|]", cells[cols["techniques"]]) if t.strip()]
    for tag, i in cols["tags"].items():
        ex[tag] = cells[i]
    problems = validate_example(ex, row, lambda i, k, src=src: src[i])
    if problems:
        res.errors.extend(problems)
    else:
        res.examples.append(normalise(ex))
        res.rows.append(row)


def _csv_history(cell: str, row: int, name: str, res: ParseResult) -> list[tuple[str, str]] | None:
    """A CSV `history` cell: the earlier turns as JSON [[request, answer], ...]; None (and an error) if not."""
    try:
        pairs = json.loads(cell)
    except json.JSONDecodeError as e:
        res.errors.append(Problem(row, name, f"the earlier turns are not JSON ({e.msg} at character {e.pos}): "
                                  'write them as [["request", "answer"], ...] or leave the cell empty'))
        return None
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p)
                                              for p in pairs):
        res.errors.append(Problem(row, name, 'must be a list of [request, answer] text pairs, e.g. '
                                  '[["plan a trip", "You are a travel agent..."]], or empty'))
        return None
    return [(q, a) for q, a in pairs]


def _decode(data: bytes, res: ParseResult) -> str | None:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        res.errors.append(Problem(None, "encoding", "the file is UTF-16: save it as UTF-8 and upload again"))
        return None
    head = data[:8192]
    # UTF-16 without a byte-order mark: ASCII text with a zero byte after (LE) or before (BE) every character.
    if len(head) >= 4 and (head[1::2].count(0) > len(head) // 4 > head[0::2].count(0)
                           or head[0::2].count(0) > len(head) // 4 > head[1::2].count(0)):
        res.errors.append(Problem(None, "encoding", "the file is UTF-16: save it as UTF-8 and upload again"))
        return None
    if head.startswith(BINARY_MAGIC) or head.count(b"\x00") > max(1, len(head) // 100):
        res.errors.append(Problem(None, "file", "binary file (not text): upload a .jsonl, .json, .csv or .txt file"))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        res.errors.append(Problem(line, "encoding", f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                                  f"{e.start}): save the file as UTF-8"))
        return None


def parse_bytes(data: bytes, name: str = "", fmt: str = "auto", max_bytes: int = MAX_FILE_BYTES,
                columns: dict | None = None) -> ParseResult:
    """Read examples from a file's bytes in any supported format; never raises on bad input.

    `columns`: for a CSV, the header names to read as {"request": ..., "answer": ...} (default: guessed)."""
    if fmt not in ("auto", *FORMATS):
        raise PetError(f"unknown format {fmt!r}: choose auto or one of {', '.join(FORMATS)}")
    res = ParseResult(format=fmt)
    if len(data) > max_bytes:
        res.errors.append(Problem(None, "file", f"file is {len(data) / 2**20:.1f} MiB, over the limit of "
                                  f"{max_bytes / 2**20:.0f} MiB: split it into smaller files"))
        return res
    if not data.strip():
        res.errors.append(Problem(None, "file", "empty file: it holds no examples"))
        return res
    text = _decode(data, res)
    if text is None:
        return res
    ext = os.path.splitext(name)[1].lower()
    stripped = text.lstrip()
    if fmt == "csv" or (fmt == "auto" and ext in (".csv", ".tsv")):
        _parse_csv(res, text, columns)
    elif fmt == "chatml" and not stripped.startswith(("{", "[")):
        _parse_chatml_text(res, text)
    elif stripped.startswith(("{", "[")):
        _parse_json_family(res, text, fmt)
    elif fmt == "auto" and "<|im_start|>" in text:
        _parse_chatml_text(res, text)
    elif fmt == "auto" and _looks_like_csv(text):
        _parse_csv(res, text, columns)
    elif fmt == "auto":
        res.errors.append(Problem(1, "format", "cannot tell the format: expected JSON lines, a JSON array, ChatML "
                                  "text or a CSV with prompt/answer columns; choose the format explicitly"))
    else:
        res.errors.append(Problem(1, "format", f"this file is not {fmt}: it does not start with {{ or ["))
    if res.format == "auto":
        res.format = "unknown"
    res.errors.sort(key=lambda p: -1 if p.row is None else p.row)  # stable: a row's problems keep their order
    res.warnings.extend(duplicate_warnings(res.examples, res.rows))
    if not res.examples and not res.errors:
        res.errors.append(Problem(None, "file", "no examples found"))
    return res


def _looks_like_csv(text: str) -> bool:
    first = text.splitlines()[0] if text.splitlines() else ""
    return any(d in first for d in ",;\t") and _match(re.split(r"[,;\t]", first), PROMPT_COLUMNS) is not None


def parse_file(path: str | Path, fmt: str = "auto", max_bytes: int = MAX_FILE_BYTES,
               columns: dict | None = None) -> ParseResult:
    p = Path(path)
    if p.is_dir():
        raise PetError(f"{p} is a folder: give the path of a .jsonl, .json, .csv or .txt file")
    if not p.is_file():
        raise PetError(f"{p}: no such file")
    size = p.stat().st_size
    if size > max_bytes:  # refuse before reading a huge file into memory
        res = ParseResult(format=fmt)
        res.errors.append(Problem(None, "file", f"file is {size / 2**20:.1f} MiB, over the limit of "
                                  f"{max_bytes / 2**20:.0f} MiB: split it into smaller files"))
        return res
    return parse_bytes(p.read_bytes(), p.name, fmt, max_bytes, columns)


# --- token lengths ---

class Lengths:
    """Token length of an example as the trainer sees it: the tier's system prompt added (as the trainer
    adds it to examples without one), rendered with the tier's template, counted by its tokenizer.

    Falls back to characters / 4 (marked `exact = False`) where the tokenizer cannot be loaded.
    Results are cached by content, so re-measuring a 10,000-row dataset after one edit is cheap.
    """

    def __init__(self, engine=None, tier: str = "enhanced"):
        self.tokenize = self.template = None
        self.system = ""
        self.reason = ""
        self.ident = "chars/4"  # names the tokenizer, for caches that outlive this object
        if engine is not None:
            try:
                spec = engine.tiers.spec(tier)
                self.system = spec.system_prompt or ""
                self.template = engine.template_for(tier)
                self.tokenize = engine.tokenizer_for(tier)
                sys_sha = hashlib.sha256(self.system.encode("utf-8")).hexdigest()[:12]
                self.ident = f"{spec.model}|{self.template.name}|system:{sys_sha}"
            except Exception as e:  # no model here: still usable, approximately
                self.tokenize, self.reason = None, f"{type(e).__name__}: {e}"
        else:
            self.reason = "no tokenizer"
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()  # one llama.cpp vocabulary, shared by the UI's queue workers

    @property
    def exact(self) -> bool:
        return self.tokenize is not None

    def text(self, ex: dict) -> str:
        from pet.templates import with_system

        msgs = with_system(ex["messages"], self.system)
        if self.template is not None:
            return self.template.render(msgs, add_generation_prompt=False)
        return "\n".join(m["content"] for m in msgs)

    def __call__(self, ex: dict) -> int:
        key = json.dumps(ex["messages"], ensure_ascii=False, sort_keys=True)
        n = self._cache.get(key)
        if n is None:
            try:
                text = self.text(ex)
            except PetError:  # a conversation the template refuses: measure its raw text
                text = "\n".join(str(m.get("content", "")) for m in [{"content": self.system}, *ex["messages"]])
            if self.tokenize:
                with self._lock:
                    n = len(self.tokenize(text))
            else:
                n = (len(text) + 3) // 4
            self._cache[key] = n
        return n


def length_warnings(res: ParseResult, lengths: Lengths, cutoff: int = MAX_SEQ_LEN) -> None:
    unit = "tokens" if lengths.exact else "tokens (estimated)"
    for ex, row in zip(res.examples, res.rows):
        n = lengths(ex)
        if n > cutoff:
            res.warnings.append(Problem(row, "messages", f"{n} {unit}, over the training cutoff of {cutoff}: "
                                        "the trainer will cut the end off"))


def validate_file(path, fmt: str = "auto", lengths: Lengths | None = None, cutoff: int = MAX_SEQ_LEN,
                  columns: dict | None = None) -> ParseResult:
    res = parse_file(path, fmt, columns=columns)
    if lengths is not None:
        length_warnings(res, lengths, cutoff)
    return res


# --- stats ---

def _pct(sorted_vals: list[int], q: float) -> int:
    return sorted_vals[min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))]


def stats(examples: list[dict], lengths: Lengths | None = None, cutoff: int = MAX_SEQ_LEN,
          tokens: list[int] | None = None) -> dict:
    """Counts per tag and the token-length distribution (`tokens`: lengths already measured, if any)."""
    lengths = lengths or Lengths()
    domains = Counter((e.get("domain") or "(none)") for e in examples)
    techniques = Counter(t for e in examples for t in e.get("techniques") or [])
    toks = sorted(tokens if tokens is not None else (lengths(e) for e in examples))
    dist = {"exact": lengths.exact, "cutoff": cutoff, "min": 0, "median": 0, "p90": 0, "max": 0, "mean": 0.0,
            "over_cutoff": 0, "histogram": []}
    if toks:
        width = 64 if toks[-1] <= 2048 else max(64, -(-toks[-1] // 32 // 64) * 64)
        buckets = Counter(t // width for t in toks)
        dist.update(min=toks[0], median=int(statistics.median(toks)), p90=_pct(toks, 0.9), max=toks[-1],
                    mean=round(sum(toks) / len(toks), 1), over_cutoff=sum(t > cutoff for t in toks),
                    histogram=[{"from": b * width, "to": (b + 1) * width, "count": buckets.get(b, 0)}
                               for b in range(toks[-1] // width + 1)])
    held = sum(is_heldout(e) for e in examples)
    tags = {tag: dict(Counter((e.get(tag) or "(untagged)") for e in examples).most_common())
            for tag in ("language", "pov", "style")}
    return {"examples": len(examples), "heldout": held, "train": len(examples) - held,
            "domains": dict(domains.most_common()), "techniques": dict(techniques.most_common()),
            "languages": tags["language"], "povs": tags["pov"], "styles": tags["style"],
            "turns": dict(Counter(f"{sum(m['role'] == 'user' for m in e['messages'])} user turn(s)"
                                  for e in examples).most_common()), "tokens": dist}


# --- export ---

def neutralise_cell(cell: str) -> str:
    """Spreadsheets run a cell that starts with = + - @ as a formula: prefix it with ' so it stays text."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def _split_turns(e: dict) -> tuple[str, list[tuple[str, str]]]:
    msgs = e["messages"]
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    turns = [m for m in msgs if m["role"] != "system"]
    return system, [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns) - 1, 2)]


def export_text(examples: list[dict], fmt: str) -> str:
    if fmt not in EXPORT_FORMATS:
        raise PetError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "jsonl":
        return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
    if fmt == "csv":
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        tags = [t for t in TEXT_TAGS if any(t in e for e in examples)]  # only the tags the rows carry
        split = [_split_turns(e) for e in examples]
        # Earlier turns of a conversation go in a `history` column (JSON [[request, answer], ...]), only
        # when some row has them, so a single-turn CSV stays three plain columns wide.
        history = ["history"] if any(len(pairs) > 1 for _, pairs in split) else []
        w.writerow(["system", "prompt", "answer", "domain", "techniques", *tags, *history])
        for e, (system, pairs) in zip(examples, split):
            q, a = pairs[-1]
            extra = [json.dumps([list(p) for p in pairs[:-1]], ensure_ascii=False) if pairs[:-1] else ""]
            w.writerow([neutralise_cell(c) for c in (system, q, a, e.get("domain", ""),
                                                     "; ".join(e.get("techniques", [])),
                                                     *(e.get(t, "") for t in tags), *extra[:len(history)])])
        return buf.getvalue()
    out = []
    for e in examples:
        system, pairs = _split_turns(e)
        tags = {k: e[k] for k in ("domain", "techniques", *TEXT_TAGS) if k in e}
        if fmt == "alpaca":
            q, a = pairs[-1]
            rec = {"instruction": q, "input": "", "output": a}
            if system:
                rec["system"] = system
            if len(pairs) > 1:
                rec["history"] = [list(p) for p in pairs[:-1]]
        else:
            conv = ([{"from": "system", "value": system}] if system else []) + [
                {"from": f, "value": v} for q, a in pairs for f, v in (("human", q), ("gpt", a))]
            rec = {"conversations": conv}
        out.append({**rec, **tags})
    return json.dumps(out, ensure_ascii=False, indent=1) + "\n"


def export(examples: list[dict], fmt: str, path: str | Path) -> Path:
    return write_atomic(path, export_text(examples, fmt))
