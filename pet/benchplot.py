"""Plotly figures of benchmark runs, shared by the Benchmark tab and bench/quality_chart.py (no gradio here)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pet import benchmark

HYGIENE = (("ends_share", "ends by itself"), ("blocks_line_share", "has \"Blocks added:\""),
           ("rewrite_share", "rewrites, not answers"))


def tier_figure(run: dict) -> go.Figure:
    """PET score per tier with its 95% interval, and the hygiene shares, for one run."""
    tiers = run["tiers"]
    names = [t["tier"] for t in tiers]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55],
                        subplot_titles=("PET score (0-100), 95% interval", "answer hygiene (share of answers)"))
    scores = [t.get("pet_score") or 0 for t in tiers]
    ci = [t.get("pet_score_ci") or [s, s] for t, s in zip(tiers, scores)]
    fig.add_trace(go.Bar(x=names, y=scores, marker_color="#4f46e5", showlegend=False,
                         text=[f"{s:.1f}" for s in scores], textposition="outside",
                         error_y={"type": "data", "symmetric": False, "array": [c[1] - s for c, s in zip(ci, scores)],
                                  "arrayminus": [s - c[0] for c, s in zip(ci, scores)]}), row=1, col=1)
    for (key, label), color in zip(HYGIENE, ("#059669", "#d97706", "#2563eb")):
        fig.add_trace(go.Bar(x=names, y=[t.get(key) or 0 for t in tiers], name=label, marker_color=color), row=1, col=2)
    speed = " · ".join(f"{t['tier']} {t['tok_s']:.0f} tok/s, TTFT {t['ttft_s']:.2f} s"
                       for t in tiers if t.get("tok_s") is not None and t.get("ttft_s") is not None)
    fig.update_layout(barmode="group", height=420, width=1000, margin={"l": 50, "r": 20, "t": 90, "b": 50},
                      title={"text": f"PET benchmark, {run['n_prompts']} prompts ({run['source']})"
                                     f"<br><sup>{speed}</sup>", "x": 0.01},
                      legend={"orientation": "h", "y": -0.15})
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    return fig


def history_figure(rows: list[dict], metric: str) -> go.Figure:
    """A metric across stored runs (rows from benchmark.history), one line per tier, with intervals."""
    fig = go.Figure()
    order = list(dict.fromkeys(r["run_id"] for r in rows))
    for tier in dict.fromkeys(r["tier"] for r in rows):
        pts = [r for r in rows if r["tier"] == tier and r["value"] is not None]
        if not pts:
            continue
        has_ci = any(p["ci_low"] is not None for p in pts)
        fig.add_trace(go.Scatter(
            x=[order.index(p["run_id"]) + 1 for p in pts], y=[p["value"] for p in pts], mode="lines+markers",
            name=tier, text=[f"run {p['run_id']} · group {p['group']}" for p in pts],
            error_y={"type": "data", "symmetric": False,
                     "array": [(p["ci_high"] - p["value"]) if p["ci_high"] is not None else 0 for p in pts],
                     "arrayminus": [(p["value"] - p["ci_low"]) if p["ci_low"] is not None else 0 for p in pts]}
            if has_ci else None))
    groups = {r["run_id"]: r["group"] for r in rows}
    label = benchmark.TIER_METRICS[metric]
    fig.update_layout(title=f"{label} across runs (bars: 95% interval)", height=380,
                      xaxis={"title": "run · group (runs sharing a letter are comparable)", "tickmode": "array",
                             "tickvals": list(range(1, len(order) + 1)),
                             "ticktext": [f"{i + 1}·{groups[r]}" for i, r in enumerate(order)]},
                      yaxis_title=label, margin={"l": 60, "r": 20, "t": 50, "b": 60})
    return fig
