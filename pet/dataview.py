"""What the Data tab shows, computed without gradio: table pages, the row editor, the training preview.

Every string built as HTML here escapes what a user typed first, then adds PET's own markup.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

from pet import PetError
from pet.dataset import TRAIN_CUTOFF, Lengths, ParseResult, Problem, normalise, validate_example

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


def editor_fields(ex: dict | None) -> tuple[str, str, str]:
    """(messages as JSON, domain, techniques comma-separated) for the row editor."""
    ex = ex or BLANK
    return (json.dumps(ex["messages"], ensure_ascii=False, indent=1), ex.get("domain", ""),
            ", ".join(ex.get("techniques") or []))


def from_editor(messages_json: str, domain: str, techniques: str) -> tuple[dict | None, list[Problem]]:
    """The example the editor describes, or None with every problem (bad JSON names its line)."""
    try:
        msgs = json.loads(messages_json or "")
    except json.JSONDecodeError as e:
        return None, [Problem(None, "messages", f"bad JSON at line {e.lineno}, column {e.colno}: {e.msg}")]
    except RecursionError:
        return None, [Problem(None, "messages", "nested too deeply")]
    ex = {"messages": msgs}
    if (domain or "").strip():
        ex["domain"] = domain.strip()
    tech = [t.strip() for t in (techniques or "").split(",") if t.strip()]
    if tech:
        ex["techniques"] = tech
    problems = validate_example(ex)
    return (None, problems) if problems else (normalise(ex), [])


def check_html(ex: dict | None, problems: list[Problem], lengths: Lengths | None, cutoff: int = TRAIN_CUTOFF) -> str:
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
    verdict = (f"<b>ready to import: {len(res.examples)} example(s)</b>" if res.ok else
               f"<b>cannot import: {len(res.errors)} problem(s); nothing was written</b>")
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
