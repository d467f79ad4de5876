"""The Gradio UI: one module per tab, each with `build(engine)` that lays out its components
and wires its events. Callbacks stay thin: unpack inputs, one engine call, map the result,
and turn PetError into gr.Error/gr.Warning. Per-session state lives in gr.State as plain data.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from pet.config import Settings
from pet.engine import Engine

# (module, tab label), in the order the tabs appear.
TABS = (
    ("chat", "Chat"),
    ("data", "Data"),
    ("train", "Train"),
    ("compare", "Compare"),
    ("arena", "Arena"),
    ("bench", "Benchmark"),
)

CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "pet.css"

# The public API, chosen on purpose (documented in the README): every other event is private, callable
# only by the page itself. "score" is the PET score tab's endpoint, public once that tab registers it.
PUBLIC_API = ("chat", "compare", "score")

READ_ONLY_NOTE = ("**Read-only demo.** You can chat, compare and judge battles; editing the examples, "
                  "importing, training and changing tiers are off on this public Space.")


@dataclass
class Live:
    """A list on the page that follows the engine while the page is open (the tier registry, the dataset
    versions). `key()` is cheap and changes when the list must; `update(value, old_key)` returns the
    component's update given its current value (old_key is None on page load)."""

    component: Any
    key: Callable[[], Any]
    update: Callable[[Any, Any], Any]


LIVE_EVERY_S = 3.0


def _wire_live(demo: gr.Blocks, lives: list[Live]) -> None:
    """Refresh every Live list on page load, then whenever its key changes (checked every few seconds)."""
    if not lives:
        return
    seen = gr.State(None)
    comps = [lv.component for lv in lives]

    def refresh(old_keys, *values):
        old_keys = old_keys or [None] * len(lives)
        keys = [lv.key() for lv in lives]
        ups = [lv.update(v, None if old is None else old) if old is None or k != old else gr.skip()
               for lv, v, k, old in zip(lives, values, keys, old_keys)]
        return [keys, *ups]

    demo.load(refresh, [seen, *comps], [seen, *comps], api_name=False, show_progress="hidden")
    gr.Timer(LIVE_EVERY_S).tick(refresh, [seen, *comps], [seen, *comps], api_name=False, show_progress="hidden")


def build_app(engine: Engine) -> gr.Blocks:
    # Uploads and the copies Gradio serves are kept a day, then removed (they live under PET_HOME/uploads).
    with gr.Blocks(title="PET Studio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# PET Studio\nTurn a rough request into a well-built prompt: role, task, context, "
                    "constraints, reasoning steps, examples and output format, like blocks that fit together.",
                    elem_id="pet-header")
        if engine.settings.read_only:
            gr.Markdown(READ_ONLY_NOTE, elem_id="pet-read-only")
        lives: list[Live] = []
        for module, label in TABS:
            with gr.Tab(label, id=module, elem_id=f"tab-{module}"):
                parts = importlib.import_module(f"pages.{module}").build(engine) or {}
            # A tab that shows stored data (leaderboard, saved lists) fills it on every page load.
            if "on_load" in parts:
                fn, outputs = parts["on_load"]
                demo.load(fn, None, outputs, api_name=False, show_progress="hidden")
            lives += parts.get("live", [])
        _wire_live(demo, lives)
    hide_private_api(demo)
    return demo


def hide_private_api(demo: gr.Blocks) -> None:
    """Make every endpoint outside PUBLIC_API private, whatever name its event got (a callable value or an
    event without api_name=False would otherwise be listed and callable by API clients)."""
    for fn in demo.fns.values():
        if fn.api_name not in PUBLIC_API:
            fn.api_visibility = "private"


def launch(settings: Settings | None = None, block: bool = True, engine: Engine | None = None, **kw):
    settings = settings or Settings.from_env()
    # Gradio keeps uploads (and copies of the files it serves) in its cache folder: under PET_HOME, like
    # everything else PET writes, unless GRADIO_TEMP_DIR says otherwise. Read when components are built.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.path("uploads")))
    engine = engine or Engine(settings)  # `serve --ollama-port` shares its engine (and loaded models)
    demo = build_app(engine)
    # Each model serves one request at a time (its lock); queueing, not threads, gives concurrency.
    demo.queue(default_concurrency_limit=4)
    css = CSS_PATH.read_text(encoding="utf-8") if CSS_PATH.exists() else None
    # Downloads are written to PET_HOME/exports, the one folder of PET_HOME that may be served (not pet.db).
    if settings.auth:  # every route behind the login, not only those Gradio guards (pages/security.py)
        from starlette.middleware import Middleware

        from pages.security import LoginRequired

        app_kwargs = kw.setdefault("app_kwargs", {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(LoginRequired, auth=settings.auth)]
    return demo.launch(server_name=settings.host, server_port=settings.port, auth=settings.auth,
                       css=css, theme=gr.themes.Soft(), prevent_thread_lock=not block, show_error=False,
                       footer_links=["api", "gradio"], allowed_paths=[str(settings.path("exports"))],
                       max_file_size=settings.max_upload_mb * 2**20, **kw)
