"""Export to Ollama, on the Train tab: a finished run's adapter, or any local tier as it is.

Thin callbacks: one engine call (pet.export.export_choice), its record shown as text.
"""

from __future__ import annotations

import html

import gradio as gr

from pet import PetError
from pet.export import QUANTIZE, export_choice


def result_md(rec: dict) -> str:
    lines = [f"**Exported `{rec['name']}`** to `{rec['out']}`. {html.escape(rec['parity']['message'])}.",
             f"Where Ollama runs: `cd {rec['out']} && {rec['command']}`"]
    if rec.get("lora_gguf"):
        lines.append(f"`{rec['lora_gguf']}` in the folder is the LoRA alone, for llama.cpp servers.")
    if rec.get("pet_side"):
        lines.append(html.escape(rec["pet_side"]))
    return "\n\n".join(lines)


def _run(engine, tier=None, run_id=None, quantize=None):
    try:
        return result_md(export_choice(engine, tier=tier, run_id=run_id, quantize=quantize or None))
    except PetError as e:
        raise gr.Error(str(e))


def run_button(engine, run_id: gr.State) -> gr.Button:
    """'Export to Ollama' beside a finished run's other actions."""
    btn = gr.Button("Export to Ollama", elem_id="train-export-run")
    out = gr.Markdown(elem_id="train-export-run-result")
    btn.click(lambda rid: _run(engine, run_id=rid), run_id, out, api_name=False)
    return btn


def tier_panel(engine, tiers: list[str]) -> None:
    """Export any local tier (its adapter merged into its base) as it is served now."""
    with gr.Accordion("Export a tier to Ollama", open=False, elem_id="train-export"):
        gr.Markdown("Merges the tier's LoRA into its base and writes a folder with a Modelfile that "
                    "`ollama create` imports, after checking that Ollama's template gives the model the "
                    "exact tokens it was trained on. Written to `PET_HOME/exports/`.")
        with gr.Row():
            tier = gr.Dropdown(tiers, value="enhanced" if "enhanced" in tiers else (tiers[0] if tiers else None),
                               label="Tier", elem_id="train-export-tier")
            quantize = gr.Dropdown(["", *QUANTIZE], value="", label="Quantize on create (optional)",
                                   elem_id="train-export-quantize")
            btn = gr.Button("Export tier", elem_id="train-export-tier-button")
        out = gr.Markdown(elem_id="train-export-tier-result")
    btn.click(lambda t, q: _run(engine, tier=t, quantize=q), [tier, quantize], out, api_name=False)
