"""The Gradio UI: one module per tab, each with `build(engine)` that lays out its components
and wires its events. Callbacks stay thin: unpack inputs, one engine call, map the result,
and turn PetError into gr.Error/gr.Warning. Per-session state lives in gr.State as plain data.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

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
)

CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "pet.css"


def build_app(engine: Engine) -> gr.Blocks:
    # delete_cache: every hour, uploads and downloads older than a day are removed.
    with gr.Blocks(title="PET Studio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# PET Studio\nTurn a rough request into a well-built prompt: role, task, context, "
                    "constraints, reasoning steps, examples and output format, like blocks that fit together.",
                    elem_id="pet-header")
        for module, label in TABS:
            with gr.Tab(label, id=module, elem_id=f"tab-{module}"):
                parts = importlib.import_module(f"pages.{module}").build(engine) or {}
            # A tab that shows stored data (leaderboard, saved lists) fills it on every page load.
            if "on_load" in parts:
                fn, outputs = parts["on_load"]
                demo.load(fn, None, outputs, api_name=False, show_progress="hidden")
    return demo


def launch(settings: Settings | None = None, block: bool = True, **kw):
    settings = settings or Settings.from_env()
    # Uploads (and files offered for download) live under PET_HOME, not a shared /tmp: Gradio stores each
    # in a folder with a generated name and strips any path from the file name it was sent with.
    os.environ["GRADIO_TEMP_DIR"] = str(settings.path("uploads"))
    engine = Engine(settings)
    demo = build_app(engine)
    # Each model serves one request at a time (its lock); queueing, not threads, gives concurrency.
    demo.queue(default_concurrency_limit=4)
    css = CSS_PATH.read_text(encoding="utf-8") if CSS_PATH.exists() else None
    if settings.auth:  # every route behind the login, not only those Gradio guards (pages/security.py)
        from starlette.middleware import Middleware

        from pages.security import LoginRequired

        app_kwargs = kw.setdefault("app_kwargs", {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(LoginRequired, auth=settings.auth)]
    from pet.dataset import MAX_FILE_BYTES

    kw.setdefault("max_file_size", MAX_FILE_BYTES)  # a bigger upload is refused before it reaches the disk
    # Exports a tab writes under PET_HOME/exports may be downloaded (Gradio serves only the folders named
    # here, its upload folder, the working directory and the system temp folder).
    kw.setdefault("allowed_paths", [str(settings.path("exports"))])
    return demo.launch(server_name=settings.host, server_port=settings.port, auth=settings.auth,
                       css=css, theme=gr.themes.Soft(), prevent_thread_lock=not block, show_error=False,
                       footer_links=["api", "gradio"], **kw)
