"""Data tab: browse, edit, import, version and export the training examples.

The table shows one version (the one this browser tab loaded); every save names that version as
its base, so a save from a stale tab is refused instead of overwriting a newer one.
"""

from __future__ import annotations

import html
import threading
from types import SimpleNamespace

import gradio as gr
import plotly.graph_objects as go

from pet import PetError
from pet import dataview as dv
from pet.dataset import EXPORT_FORMATS, FORMATS, MAX_SEQ_LEN, Lengths, export, parse_file, stats
from pet.templates import with_system
from pet.datastore import DatasetStore

ROW_CLICK = ("element.addEventListener('click', (e) => { const tr = e.target.closest('tr[data-row]'); "
             "if (tr) trigger('click', {row: tr.dataset.row}); });")
TABLE_CSS = """
table.pet-data-table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
table.pet-data-table th, table.pet-data-table td { border-bottom: 1px solid #ddd; padding: 4px 6px;
    text-align: left; vertical-align: top; }
table.pet-data-table tbody tr { cursor: pointer; }
table.pet-data-table tbody tr:hover { background: rgba(120, 120, 255, 0.08); }
"""
VERSION_COLUMNS = ["version", "name", "saved", "examples", "note"]
UPLOAD_COLUMNS = ["row", "domain", "techniques", "request", "answer"]
EXT = {"jsonl": "jsonl", "csv": "csv", "alpaca": "json", "sharegpt": "json"}


class _Data:
    """Per-app helpers: the store, one tokenizer, and the search index of the version last shown."""

    def __init__(self, engine):
        self.engine = engine
        self.ds = DatasetStore(engine.store)
        self._lengths = None
        self._index = None
        self._lock = threading.Lock()

    @property
    def lengths(self) -> Lengths:
        with self._lock:
            if self._lengths is None:
                self._lengths = Lengths(self.engine)
            return self._lengths

    def template(self):
        return self.engine.template_for("enhanced")

    def index(self, version: int) -> dv.Index:
        idx = self._index
        if idx is None or idx.version != version:
            idx = self._index = dv.Index(version, self.ds.get(version))
        return idx

    def show(self, version: int, query: str, tg: str, pg):
        """The table view: rows, the info line, the page number, the tag choices."""
        idx = self.index(version)
        p = dv.table_page(idx, query, tg, pg, self.lengths)
        choices = idx.tag_choices()
        tag_update = gr.update(choices=choices, value=tg if tg in choices else dv.ALL_TAGS)
        return dv.table_html(p), p.info(version), p.page, tag_update

    def everything(self, version: int, query: str = "", tg: str = dv.ALL_TAGS, pg=1):
        """Every output that follows the shown version (ALL_OUT): the view, the versions and the charts."""
        st = stats(self.index(version).examples, self.lengths, MAX_SEQ_LEN,
                   self.ds.token_lengths(version, self.lengths))
        return (version, *self.show(version, query, tg, pg), self.versions_html(), *_charts(st))

    def versions_html(self) -> str:
        return dv.html_table(VERSION_COLUMNS, dv.versions_rows(self.ds.versions()))

    def commit(self, version: int, examples: list[dict], note: str, query, tg, pg):
        """Save the examples as a new version on top of `version` and show it, with a status line."""
        try:
            self.engine.settings.check_writable("change the examples")
            v = self.ds.save(examples, version, note)
        except PetError as e:
            raise _error(e) from None
        return (*self.everything(v, query, tg, pg), _say(f"Saved as version {v}: {note}."))


def _say(text: str) -> str:
    """A status line for gr.Markdown: escaped, since it can hold a file or version name someone typed."""
    return html.escape(text).replace("*", "\\*").replace("_", "\\_")


def _error(e: Exception) -> gr.Error:
    return gr.Error(html.escape(str(e)))  # toasts render HTML; the message can quote what a user typed


def _charts(st: dict):
    hist = st["tokens"]["histogram"]
    tok = go.Figure(go.Bar(x=[f"{b['from']}-{b['to']}" for b in hist], y=[b["count"] for b in hist]))
    tok.update_layout(title=f"Token lengths (median {st['tokens']['median']}, p90 {st['tokens']['p90']}, "
                            f"cutoff {st['tokens']['cutoff']})", xaxis_title="tokens", yaxis_title="examples",
                      height=320, margin=dict(l=40, r=10, t=50, b=40))
    tags = go.Figure()
    tags.add_trace(go.Bar(name="domain", y=list(st["domains"]), x=list(st["domains"].values()), orientation="h"))
    tags.add_trace(go.Bar(name="technique", y=list(st["techniques"]), x=list(st["techniques"].values()),
                          orientation="h"))
    tags.update_layout(title="Tag balance", xaxis_title="examples", barmode="group",
                       height=max(320, 18 * (len(st["domains"]) + len(st["techniques"])) + 80),
                       margin=dict(l=10, r=10, t=50, b=40), yaxis=dict(autorange="reversed"))
    return tok, tags


def build(engine) -> dict:
    data = _Data(engine)
    ui = SimpleNamespace(base=gr.State(0),  # the version this browser tab shows and edits
                         editing=gr.State(-1),  # 0-based row in the editor; -1 = a new row
                         row_base=gr.State(None))  # the row as saved (its earlier turns and tags are kept)
    gr.Markdown("The training examples the enhanced tier learns from. Every save is a version; nothing is "
                "ever overwritten. Select a row to edit it.")
    for section in (_browser, _editor, _importer, _versions, _exporter, _charts_panel):
        vars(ui).update(section())
    ui.all_out = [ui.base, ui.table, ui.info, ui.page, ui.tag, ui.versions, ui.tok_plot, ui.tag_plot]
    ui.view_out = [ui.table, ui.info, ui.page, ui.tag]
    ui.form_in = [ui.system, ui.request, ui.answer, ui.domain, ui.techniques]
    for wire in (_wire_browse, _wire_editor, _wire_import, _wire_versions, _wire_export):
        wire(ui, data)
    return {"table": ui.table, "request": ui.request, "answer": ui.answer, "base": ui.base}


# One queue lane for the events that show or change versions: each runs after the previous one ends,
# so a slow table refresh can never land on top of a newer save's view.
LANE = dict(concurrency_limit=1, concurrency_id="data-tab")


# --- layout: one function per section; each returns its components by name ---

def _browser() -> dict:
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="words in a request or answer", elem_id="data-search",
                            scale=3)
        tag = gr.Dropdown([dv.ALL_TAGS], value=dv.ALL_TAGS, label="Tag", elem_id="data-tag", scale=2)
        page = gr.Number(1, precision=0, minimum=1, label="Page", elem_id="data-page", scale=1, min_width=80)
        with gr.Column(scale=1, min_width=120):
            prev_b = gr.Button("◀ Prev", size="sm", elem_id="data-prev")
            next_b = gr.Button("Next ▶", size="sm", elem_id="data-next")
            reload_b = gr.Button("Reload latest", size="sm", elem_id="data-reload")
    info = gr.Markdown("", elem_id="data-info")
    # An HTML table we escape ourselves (gr.Dataframe sometimes kept showing an older value after quick
    # successive updates); a click on a row opens it in the editor.
    table = gr.HTML("", elem_id="data-table", js_on_load=ROW_CLICK, css_template=TABLE_CSS)
    return dict(search=search, tag=tag, page=page, prev_b=prev_b, next_b=next_b, reload_b=reload_b, info=info,
                table=table)


def _editor() -> dict:
    with gr.Group():
        with gr.Row():
            row_num = gr.Number(None, label="Row #", precision=0, minimum=1, elem_id="data-row", scale=1,
                                min_width=90)
            edit_b = gr.Button("Edit row", elem_id="data-edit", scale=1)
            new_b = gr.Button("New row", elem_id="data-new", scale=1)
            delete_b = gr.Button("Delete row", variant="stop", elem_id="data-delete", scale=1)
        editor_title = gr.Markdown("**Editing:** nothing yet: select a row or click New row", elem_id="data-editing")
        with gr.Row():
            with gr.Column(scale=3):
                request = gr.Textbox(label="Request: what a user typed", lines=3, max_lines=12,
                                     elem_id="data-request")
                answer = gr.Textbox(label="Answer: the well-built prompt PET should write", lines=12, max_lines=40,
                                    elem_id="data-answer")
                with gr.Row():
                    domain = gr.Textbox(label="Domain", elem_id="data-domain")
                    techniques = gr.Textbox(label="Techniques (comma-separated)", elem_id="data-techniques")
                with gr.Accordion("System prompt (optional)", open=False):
                    system = gr.Textbox(label="System prompt", lines=3, elem_id="data-system",
                                        info="blank = the tier's own, which the trainer adds (see the preview)")
                kept = gr.HTML("", elem_id="data-kept")
                save_b = gr.Button("Save row (new version)", variant="primary", interactive=False,
                                   elem_id="data-save")
            with gr.Column(scale=3):
                check = gr.HTML("", elem_id="data-check")
                preview = gr.HTML("", label="What the trainer sees", elem_id="data-preview")
    status = gr.Markdown("", elem_id="data-status")
    return dict(row_num=row_num, edit_b=edit_b, new_b=new_b, delete_b=delete_b, editor_title=editor_title,
                request=request, answer=answer, domain=domain, techniques=techniques, system=system, kept=kept,
                save_b=save_b, check=check, preview=preview, status=status)


def _importer() -> dict:
    with gr.Accordion("Import a file", open=True):
        gr.Markdown("Upload JSONL/JSON (messages, Alpaca, ShareGPT, ChatML text) or CSV with request and answer "
                    "columns (see the README for each format's fields). You see every problem first; nothing is "
                    "written until you click Import.")
        with gr.Row():
            upload = gr.File(label="File", file_types=[".jsonl", ".json", ".csv", ".tsv", ".txt"],
                             elem_id="data-upload", scale=2)
            with gr.Column(scale=1):
                fmt = gr.Dropdown(["auto", *FORMATS], value="auto", label="Format", elem_id="data-format")
                mode = gr.Radio(["append", "replace"], value="append", label="Import mode", elem_id="data-mode")
                import_b = gr.Button("Import", variant="primary", interactive=False, elem_id="data-import")
                good_b = gr.Button("Import the good rows", visible=False, elem_id="data-import-good")
        with gr.Row(visible=False) as colmap:  # a CSV: which columns hold the request and the answer
            req_col = gr.Dropdown([], label="Request column", elem_id="data-request-column")
            ans_col = gr.Dropdown([], label="Answer column", elem_id="data-answer-column")
        report = gr.HTML("", elem_id="data-upload-report")
        upreview = gr.HTML("", elem_id="data-upload-preview", css_template=TABLE_CSS, js_on_load=None)
    return dict(upload=upload, fmt=fmt, mode=mode, import_b=import_b, good_b=good_b, colmap=colmap,
                req_col=req_col, ans_col=ans_col, report=report, upreview=upreview)


def _versions() -> dict:
    with gr.Accordion("Versions", open=True):
        versions = gr.HTML("", elem_id="data-versions", css_template=TABLE_CSS, js_on_load=None, max_height=320)
        with gr.Row():
            ver = gr.Number(None, label="Version", precision=0, minimum=1, elem_id="data-version", min_width=90)
            restore_b = gr.Button("Restore this version", elem_id="data-restore")
            vname = gr.Textbox(label="Name", placeholder="e.g. before cleanup", elem_id="data-version-name")
            name_b = gr.Button("Name this version", elem_id="data-name")
    return dict(versions=versions, ver=ver, restore_b=restore_b, vname=vname, name_b=name_b)


def _exporter() -> dict:
    with gr.Accordion("Export", open=False):
        with gr.Row():
            xfmt = gr.Dropdown(list(EXPORT_FORMATS), value="jsonl", label="Format", elem_id="data-export-format")
            xver = gr.Textbox(label="Version (number or name; empty = shown version)", elem_id="data-export-version")
            export_b = gr.Button("Export", elem_id="data-export")
        xfile = gr.File(label="Download", interactive=False, elem_id="data-export-file")
    return dict(xfmt=xfmt, xver=xver, export_b=export_b, xfile=xfile)


def _charts_panel() -> dict:
    with gr.Accordion("Charts", open=True):
        with gr.Row():
            tok_plot = gr.Plot(label="Token lengths", elem_id="data-chart-tokens")
            tag_plot = gr.Plot(label="Tag balance", elem_id="data-chart-tags")
    return dict(tok_plot=tok_plot, tag_plot=tag_plot)


# --- events: each callback unpacks its inputs, makes one engine call and maps the result back ---

def _wire_browse(ui, data: _Data) -> None:
    show, view = data.show, [ui.base, ui.search, ui.tag, ui.page]
    gr.on(triggers=None, fn=lambda: data.everything(data.ds.latest()), inputs=[], outputs=ui.all_out, **LANE)
    ui.reload_b.click(lambda q, t, p: data.everything(data.ds.latest(), q, t, p), [ui.search, ui.tag, ui.page],
                      ui.all_out, **LANE)
    gr.on([ui.search.submit, ui.tag.change], lambda v, q, t: show(v, q, t, 1), [ui.base, ui.search, ui.tag],
          ui.view_out, **LANE)
    ui.page.submit(show, view, ui.view_out, **LANE)
    ui.prev_b.click(lambda v, q, t, p: show(v, q, t, (p or 1) - 1), view, ui.view_out, **LANE)
    ui.next_b.click(lambda v, q, t, p: show(v, q, t, (p or 1) + 1), view, ui.view_out, **LANE)


def _wire_editor(ui, data: _Data) -> None:
    edit_out = [ui.editing, ui.row_base, *ui.form_in, ui.kept, ui.editor_title, ui.row_num]

    def open_row(version: int, n):
        examples = data.index(version).examples
        if n is None or not 1 <= int(n) <= len(examples):
            raise gr.Error(f"row {n} does not exist: choose a row between 1 and {len(examples)}")
        i = int(n) - 1
        return (i, examples[i], *dv.form_fields(examples[i]), f"**Editing:** row {i + 1} of version {version}",
                i + 1)

    def select_row(version: int, evt: gr.EventData):
        return open_row(version, int(getattr(evt, "row", 0) or 0))

    ui.edit_b.click(open_row, [ui.base, ui.row_num], edit_out, **LANE)
    ui.table.click(select_row, [ui.base], edit_out, **LANE)
    ui.new_b.click(lambda: (-1, None, *dv.form_fields(None), "**Editing:** a new row (saved at the end)", None),
                   None, edit_out, **LANE)
    gr.on([c.change for c in ui.form_in], lambda ex_base, *f: _live_check(data, ex_base, *f),
          [ui.row_base, *ui.form_in], [ui.check, ui.preview, ui.save_b], trigger_mode="always_last")

    def save_row(version, i, ex_base, sys_, req_, ans_, dom, tech, query, tg, pg):
        ex, problems = dv.from_form(ex_base, sys_, req_, ans_, dom, tech)
        if ex is None:
            raise gr.Error(html.escape("not saved: " + "; ".join(str(p).removeprefix("file, ") for p in problems)))
        examples = data.ds.get(version)
        i, note = dv.put_row(examples, i, ex)
        out = data.commit(version, examples, note, query, tg, pg)
        # The editor now shows the saved row of the new version (it stays open for the next change).
        return (*out, i, ex, f"**Editing:** row {i + 1} of version {out[0]}", i + 1)

    def delete_row(version, i, query, tg, pg):
        examples = data.ds.get(version)
        if not 0 <= i < len(examples):
            raise gr.Error("select a saved row to delete first")
        examples.pop(i)
        return (*data.commit(version, examples, f"deleted row {i + 1}", query, tg, pg), -1, None,
                *dv.form_fields(None), "**Editing:** nothing: the row was deleted")

    view = [ui.search, ui.tag, ui.page]
    ui.save_b.click(save_row, [ui.base, ui.editing, ui.row_base, *ui.form_in, *view],
                    [*ui.all_out, ui.status, ui.editing, ui.row_base, ui.editor_title, ui.row_num], **LANE)
    ui.delete_b.click(delete_row, [ui.base, ui.editing, *view],
                      [*ui.all_out, ui.status, ui.editing, ui.row_base, *ui.form_in, ui.kept, ui.editor_title],
                      **LANE)


def _live_check(data: _Data, ex_base, *fields_):
    """The editor's verdict, the trainer's view of the row, and whether Save is on (only while it is valid)."""
    ex, problems = dv.from_form(ex_base, *fields_)
    verdict = dv.check_html(ex, problems, data.lengths)
    if ex is None:
        return verdict, "", gr.update(interactive=False)
    try:
        # The trainer gives examples without a system message the tier's own system prompt.
        msgs = with_system(ex["messages"], data.engine.tiers.spec("enhanced").system_prompt)
        return verdict, dv.preview_html(data.template(), msgs), gr.update(interactive=True)
    except PetError as e:
        return verdict, html.escape(str(e)), gr.update(interactive=True)


def _upload_verdict(res):
    """The preview, and which import buttons are on: all rows, or only the good ones."""
    preview_rows = dv.html_table(UPLOAD_COLUMNS, dv.upload_preview(res), "no importable rows")
    good = gr.update(visible=res.partly_ok, value=f"Import the {len(res.examples)} good row(s), skip "
                                                  f"{len(res.bad_rows)} bad" if res.partly_ok else "")
    return dv.problems_html(res), preview_rows, gr.update(interactive=res.ok), good


def _wire_import(ui, data: _Data) -> None:
    max_bytes = data.engine.settings.max_upload_mb * 2**20

    def parsed(path, f, req=None, ans=None):
        cols = {"request": req, "answer": ans} if (req or ans) else None
        return parse_file(path, f, max_bytes=max_bytes, columns=cols)

    def check_upload(path, f):
        if not path:
            return "", "", gr.update(interactive=False), gr.update(visible=False), gr.update(visible=False), \
                gr.update(), gr.update()
        res = parsed(path, f)
        csv_ = res.format == "csv" and bool(res.columns)
        pick = dict(choices=res.columns) if csv_ else {}
        return (*_upload_verdict(res), gr.update(visible=csv_),
                gr.update(value=res.mapping.get("request"), **pick), gr.update(value=res.mapping.get("answer"), **pick))

    def do_import(version, path, f, how, req, ans, query, tg, pg, good_only=False):
        if not path:
            raise gr.Error("upload a file first")
        res = parsed(path, f, req, ans)
        if not (res.ok or (good_only and res.partly_ok)):
            raise gr.Error(f"not imported: {len(res.errors)} problem(s); nothing was written")
        note = dv.import_note(path, res)
        try:
            data.engine.settings.check_writable("import examples")
            v = data.ds.save(res.examples, version, note + " (replace)") if how == "replace" else \
                data.ds.add(res.examples, note)
        except PetError as e:
            raise _error(e) from None
        return (*data.everything(v, query, tg, pg), _say(f"Imported as version {v}: {note}."), None,
                gr.update(interactive=False), gr.update(visible=False))

    gr.on([ui.upload.change, ui.fmt.change], check_upload, [ui.upload, ui.fmt],
          [ui.report, ui.upreview, ui.import_b, ui.good_b, ui.colmap, ui.req_col, ui.ans_col])
    # Choosing the columns by hand reads the file again with them (.input: the user's choices, not ours).
    gr.on([ui.req_col.input, ui.ans_col.input], lambda path, f, r, a: _upload_verdict(parsed(path, f, r, a))
          if path else ("", "", gr.update(interactive=False), gr.update(visible=False)),
          [ui.upload, ui.fmt, ui.req_col, ui.ans_col], [ui.report, ui.upreview, ui.import_b, ui.good_b])
    import_in = [ui.base, ui.upload, ui.fmt, ui.mode, ui.req_col, ui.ans_col, ui.search, ui.tag, ui.page]
    import_out = [*ui.all_out, ui.status, ui.upload, ui.import_b, ui.good_b]
    ui.import_b.click(do_import, import_in, import_out, **LANE)
    ui.good_b.click(lambda *a: do_import(*a, good_only=True), import_in, import_out, **LANE)


def _wire_versions(ui, data: _Data) -> None:
    settings = data.engine.settings

    def do_restore(n, query, tg, pg):
        if n is None:
            raise gr.Error("enter the version number to restore")
        try:
            settings.check_writable("restore a version")
            v = data.ds.restore(int(n))
        except PetError as e:
            raise _error(e) from None
        return (*data.everything(v, query, tg, pg), f"Restored version {int(n)} as version {v}; nothing was deleted.")

    def do_name(n, name):
        if n is None:
            raise gr.Error("enter the version number to name")
        try:
            settings.check_writable("name a version")
            data.ds.name_version(int(n), name)
        except PetError as e:
            raise _error(e) from None
        return data.versions_html(), _say(f"Version {int(n)} named {name!r}.")

    ui.restore_b.click(do_restore, [ui.ver, ui.search, ui.tag, ui.page], [*ui.all_out, ui.status], **LANE)
    ui.name_b.click(do_name, [ui.ver, ui.vname], [ui.versions, ui.status], **LANE)


def _wire_export(ui, data: _Data) -> None:
    def do_export(version, f, which):
        try:
            v = data.ds.find(which) if (which or "").strip() else version
            examples = data.ds.get(v)
            # PET_HOME/exports is the folder the app may serve downloads from (pages.launch).
            path = export(examples, f, data.engine.settings.export_path(f"pet_examples_v{v}.{EXT[f]}"))
        except PetError as e:
            raise _error(e) from None
        return str(path), f"Exported {len(examples)} examples of version {v} as {f}."

    ui.export_b.click(do_export, [ui.base, ui.xfmt, ui.xver], [ui.xfile, ui.status], **LANE)
