"""What the Data tab shows, computed without gradio: table pages, the row editor, the training preview.

Every string built as HTML here escapes what a user typed first, then adds PET's own markup.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from pet import PetError
from pet.dataset import MAX_SEQ_LEN, TEXT_TAGS, Lengths, ParseResult, Problem, normalise, validate_example

PAGE_SIZE = 25
COLUMNS = ["#", "domain", "techniques", "request", "answer", "tokens"]
ALL_TAGS = "(all tags)"


def _clip(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _turn(ex: dict, role: str, last: bool = False) -> str:
    turns = [m["content"] for m in ex["messages"] if m["role"] == role]
    return (turns[-1] if last else turns[0]) if turns else ""


class Index:
    """A version's examples with a lower-cased search text per row (built once per version)."""

    def __init__(self, version: int, examples: list[dict]):
        self.version, self.examples = version, examples
        self.hay = ["\n".join(m["content"] for m in e["messages"]).lower() for e in examples]
        self.tags = [{f"domain: {e['domain']}"} if e.get("domain") else set() for e in examples]
        for t, e in zip(self.tags, examples):
            t.update(f"technique: {x}" for x in e.get("techniques") or [])

    def tag_choices(self) -> list[str]:
        return [ALL_TAGS] + sorted(set().union(*self.tags)) if self.tags else [ALL_TAGS]

    def matches(self, query: str = "", tag: str = "") -> list[int]:
        q = (query or "").strip().lower()
        tag = "" if tag in (None, "", ALL_TAGS) else tag
        return [i for i in range(len(self.examples))
                if (not q or q in self.hay[i]) and (not tag or tag in self.tags[i])]


@dataclass
class Page:
    rows: list[list]
    page: int
    pages: int
    matched: int
    total: int

    def info(self, version: int) -> str:
        return (f"version {version} · {self.total} examples · {self.matched} matching · "
                f"page {self.page} of {self.pages}")


def table_page(index: Index, query: str = "", tag: str = "", page: int = 1, lengths: Lengths | None = None,
               per_page: int = PAGE_SIZE) -> Page:
    """One page of the filtered table; only the rows shown are measured in tokens."""
    hits = index.matches(query, tag)
    pages = max(1, -(-len(hits) // per_page))
    page = min(max(1, int(page or 1)), pages)
    rows = []
    for i in hits[(page - 1) * per_page: page * per_page]:
        e = index.examples[i]
        rows.append([i + 1, e.get("domain", ""), ", ".join(e.get("techniques") or []), _clip(_turn(e, "user")),
                     _clip(_turn(e, "assistant", last=True)), lengths(e) if lengths else ""])
    return Page(rows, page, pages, len(hits), len(index.examples))


def html_table(headers: list[str], rows: list[list], empty: str = "nothing to show", row_ids: bool = False) -> str:
    """An HTML table with every cell escaped; with `row_ids`, each row carries its first cell (a number)
    as data-row, for click-to-select."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join((f'<tr data-row="{int(r[0])}">' if row_ids else "<tr>")
                   + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">{html.escape(empty)}</td></tr>'
    return f'<table class="pet-data-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def table_html(page: Page) -> str:
    return html_table(COLUMNS, page.rows, "no examples match", row_ids=True)


BLANK = {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]}


def _last_pair(msgs: list[dict]) -> tuple[int | None, int | None]:
    """Indexes of the last user message and of the assistant answer after it (None where missing)."""
    u = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].get("role") == "user"), None)
    a = None if u is None else next((i for i in range(u + 1, len(msgs)) if msgs[i].get("role") == "assistant"), None)
    return u, a


def form_fields(ex: dict | None) -> tuple[str, str, str, str, str, str]:
    """The row form for an example: (system prompt, request, answer, domain, techniques, kept).

    The form edits the system prompt and the last request and answer; `kept` (HTML) shows what it keeps
    as it is: the earlier turns of a multi-turn example and the text tags."""
    ex = ex or BLANK
    msgs = ex["messages"]
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    u, a = _last_pair(msgs)
    return (system, "" if u is None else msgs[u]["content"], "" if a is None else msgs[a]["content"],
            ex.get("domain", ""), ", ".join(ex.get("techniques") or []), kept_note(ex))


def _earlier(msgs: list[dict]) -> list[dict]:
    u, _ = _last_pair(msgs)
    return [m for m in msgs[:u if u is not None else 0] if m["role"] != "system"]


def kept_note(ex: dict | None) -> str:
    """HTML (user text escaped): what the form keeps as it is."""
    if not ex:
        return ""
    parts = []
    earlier = _earlier(ex["messages"])
    if earlier:
        turns = " · ".join(f"{m['role']}: {_clip(m['content'], 60)}" for m in earlier)
        parts.append(f"<p><b>Earlier turns, kept as they are ({len(earlier)}):</b> {html.escape(turns)}</p>")
    tags = [f"{t}: {ex[t]}" for t in TEXT_TAGS if ex.get(t)]
    if tags:
        parts.append(f"<p><b>Tags, kept:</b> {html.escape(' · '.join(tags))}</p>")
    return "".join(parts)


def from_form(base: dict | None, system: str, request: str, answer: str, domain: str,
              techniques: str) -> tuple[dict | None, list[Problem]]:
    """The example the form describes, or None with every problem, named as the form names its fields.

    From `base` (the row being edited; None for a new row) it keeps the earlier turns and the text tags."""
    base = base or BLANK
    earlier = _earlier(base["messages"])
    msgs = ([{"role": "system", "content": system}] if (system or "").strip() else []) + earlier + [
        {"role": "user", "content": request or ""}, {"role": "assistant", "content": answer or ""}]
    names = (["system prompt"] if (system or "").strip() else []) + \
        [f"earlier turn {k + 1}" for k in range(len(earlier))] + ["request", "answer"]
    ex = {"messages": msgs}
    if (domain or "").strip():
        ex["domain"] = domain.strip()
    tech = [t.strip() for t in (techniques or "").split(",") if t.strip()]
    if tech:
        ex["techniques"] = tech
    for tag in TEXT_TAGS:
        if base.get(tag):
            ex[tag] = base[tag]
    problems = validate_example(ex, None, lambda i, key: names[i])
    return (None, problems) if problems else (normalise(ex), [])


def check_html(ex: dict | None, problems: list[Problem], lengths: Lengths | None, cutoff: int = MAX_SEQ_LEN) -> str:
    """The editor's live verdict: every problem, or the token count against the training cutoff."""
    if problems:
        items = "".join(f"<li>{html.escape(str(p).removeprefix('file, '))}</li>" for p in problems)
        return f'<div class="pet-check pet-bad"><b>{len(problems)} problem(s):</b><ul>{items}</ul></div>'
    n = lengths(ex) if lengths else 0
    unit = "tokens" if lengths and lengths.exact else "tokens (estimated)"
    if n > cutoff:
        return (f'<div class="pet-check pet-warn">ok, but {n} {unit}: over the training cutoff of {cutoff}, '
                'so the trainer will cut the end off</div>')
    return f'<div class="pet-check pet-ok">ok: {n} {unit} (cutoff {cutoff})</div>'


def preview_html(template, messages: list[dict]) -> str:
    """The exact text the trainer sees, escaped, with the trained-on spans wrapped in <mark>."""
    try:
        text, spans = template.training_text(messages)
    except PetError as e:
        return f'<div class="pet-check pet-bad">{html.escape(str(e))}</div>'
    out, pos = [], 0
    for a, b in spans:
        out.append(html.escape(text[pos:a]))
        out.append(f"<mark>{html.escape(text[a:b])}</mark>")
        pos = b
    out.append(html.escape(text[pos:]))
    return ('<pre class="pet-preview" style="white-space:pre-wrap">' + "".join(out) + "</pre>"
            f"<small>template {html.escape(template.name)}; the highlighted part is what the model is trained "
            "to write</small>")


def problems_html(res: ParseResult, limit: int = 200) -> str:
    """An upload's verdict: format, counts, and every problem and warning by row and field."""
    if res.ok:
        verdict = f"<b>ready to import: {len(res.examples)} example(s)</b>"
    elif res.partly_ok:
        verdict = (f"<b>cannot import the whole file: {len(res.errors)} problem(s) in {len(res.bad_rows)} row(s); "
                   f"the {len(res.examples)} good row(s) can be imported on their own</b>")
    else:
        verdict = f"<b>cannot import: {len(res.errors)} problem(s); nothing was written</b>"
    parts = [f'<div class="pet-check {"pet-ok" if res.ok else "pet-bad"}">{verdict} '
             f"(format: {html.escape(res.format)})"]
    for title, items in (("errors", res.errors), ("warnings", res.warnings)):
        if items:
            lis = "".join(f"<li>{html.escape(str(p))}</li>" for p in items[:limit])
            more = f"<li>… and {len(items) - limit} more</li>" if len(items) > limit else ""
            parts.append(f'<p>{title}:</p><ul class="pet-{title}">{lis}{more}</ul>')
    return "".join(parts) + "</div>"


def upload_preview(res: ParseResult, n: int = 5) -> list[list]:
    return [[row, e.get("domain", ""), ", ".join(e.get("techniques") or []), _clip(_turn(e, "user")),
             _clip(_turn(e, "assistant", last=True))] for row, e in zip(res.rows[:n], res.examples[:n])]


def versions_rows(versions: list[dict]) -> list[list]:
    import time

    return [[v["id"], v["name"] or "", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created"])),
             v["examples"], v["note"]] for v in versions]


def put_row(examples: list[dict], i: int, ex: dict) -> tuple[int, str]:
    """Put the editor's row into the list: replace row i, or append when i is not a row (a new row).
    Returns the 0-based row it now is and the version note."""
    if 0 <= i < len(examples):
        examples[i] = ex
        return i, f"edited row {i + 1}"
    examples.append(ex)
    return len(examples) - 1, f"added row {len(examples)}"


def import_note(path: str, res: ParseResult) -> str:
    """The version note of an import: how many rows from which file, and the bad rows skipped."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    note = f"imported {len(res.examples)} from {name}"
    if res.errors:
        note += f" (skipped {len(res.bad_rows)} bad row(s): {', '.join(map(str, res.bad_rows[:20]))})"
    return note
