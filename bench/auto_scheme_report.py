"""The output of bench/auto_scheme.py: its results as a Markdown page (auto_scheme.md) and a plot (auto_scheme.png).

Separate from the bench itself (data, scheme selection, training runs): these functions only read the result
dicts `run_task` returns (one per model, its `rows` one per budget), so the page can be rewritten from a saved
auto_scheme.json without running anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

KB = 1024


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float, seeds: int) -> str:
    """The results page: the protocol, the tally, and per model its timings and one table row per budget."""
    lines = ["# `--update auto` against hand-made schemes", "",
             f"`python bench/auto_scheme.py --models {','.join(args.models)} --jobs {args.jobs}"
             f"{' --quick' if args.quick else ''}` ({seconds:.0f} s). Digits 5-9 as five new classes "
             "(`--head new:5`); one pass over the training samples, batch 1, SGD (cosine-decayed lr), the compiled "
             "C on the host; accuracy on held-out samples, the mean over the training seeds (sample order and "
             "rounding PRNG) with their spread (max - min) in brackets. Peak = the compile's `peak_sram_bytes` at "
             "that budget (host target, stack estimate included). `paper`: the paper's scheme with the largest "
             "peak that fits; `last:N`: the largest N that fits. A scheme chosen at several budgets is trained "
             "once.", ""]
    lines += [tally(results, seeds), ""]
    for res in results:
        lines += [f"## {res['model']}", "",
                  f"lr {res['lr']} (contribution runs: {res['contribution_lr']}, from their sweep); {res['train']} "
                  f"training, {res['val']} validation (contribution analysis), {res['test']} test samples, seeds "
                  f"{res['seeds']}; contribution analysis: {res['contribution_runs']} runs ({res['measured']} of "
                  f"{res['candidates']} candidates measured) in {res['contribution_seconds']:.0f} s; scheme "
                  f"selection (analysis included) {res['selection_seconds']:.0f} s; {res['training_runs']} training "
                  f"runs {res['training_seconds']:.0f} s.", ""]
        speed = [(r["budget_kb"], r["auto_seconds_per_exact"], r["auto_exact_evaluations"], r["surrogate_us_per_eval"])
                 for r in res["rows"] if "auto_seconds_per_exact" in r]
        if speed:
            lines += ["Cost model: " + "; ".join(f"{b} KB: {n} exact evaluations at {t:.2f} s each"
                                                 for b, t, n, _ in speed)
                      + f"; the search's surrogate: {max(u for *_, u in speed):.0f} us per candidate at most.", ""]
        lines += ["| budget | auto: acc | auto: peak | items | paper scheme | acc | peak | last:N | acc | peak |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            if "note" in r:
                lines.append(f"| {r['budget_kb']} KB | {r['note'][:90]} |" + "  |" * 8)
                continue
            cells = [f"{r['budget_kb']} KB", _acc(r, "auto"), _peak(r, "auto"), str(r.get("auto_items", "")),
                     r.get("paper_update", "none fits"), _acc(r, "paper"), _peak(r, "paper"),
                     r.get("last_update", "none fits"), _acc(r, "last"), _peak(r, "last")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def tally(results: list[dict[str, Any]], seeds: int) -> str:
    """How often auto matched the hand-made scheme and beat last:N (means over the `seeds` seeds)."""
    rows = [r for res in results for r in res["rows"] if "auto_acc" in r]
    paper = [r for r in rows if "paper_acc" in r]
    last = [r for r in rows if "last_acc" in r]
    spread = [max(r[f"{m}_accs"]) - min(r[f"{m}_accs"]) for r in rows for m in ("auto", "paper", "last")
              if f"{m}_accs" in r]
    worst = [f"{r['model']} {r['budget_kb']} KB ({100 * (r['auto_acc'] - r['paper_acc']):+.1f})" for r in paper
             if r["auto_acc"] < r["paper_acc"]]
    not_above = [f"{r['model']} {r['budget_kb']} KB ({100 * (r['auto_acc'] - r['last_acc']):+.1f})" for r in last
                 if r["auto_acc"] <= r["last_acc"]]
    none_fits = [f"{r['model']} {r['budget_kb']} KB" for res in results for r in res["rows"] if "auto_acc" not in r]
    return (f"**Reading.** Over the budgets where a scheme fits: auto >= the hand-made scheme in "
            f"{sum(r['auto_acc'] >= r['paper_acc'] for r in paper)} of {len(paper)} cases, auto > last:N in "
            f"{sum(r['auto_acc'] > r['last_acc'] for r in last)} of {len(last)} (means over {seeds} seeds). "
            f"Auto below the hand-made scheme: {', '.join(worst) or 'none'}; not above last:N: "
            f"{', '.join(not_above) or 'none'}. The spread between seeds of one scheme is "
            f"{100 * float(np.median(spread)):.1f} points (median; max {100 * max(spread, default=0.0):.1f}), so "
            "differences of about that size are noise. Budgets below what training the classifier alone needs: "
            f"{', '.join(none_fits) or 'none'}.")


def _acc(r: dict[str, Any], m: str) -> str:
    if m + "_acc" not in r:
        return "-"
    accs = r[m + "_accs"]
    return f"{100 * r[m + '_acc']:.1f}% ({100 * (max(accs) - min(accs)):.1f})"


def _peak(r: dict[str, Any], m: str) -> str:
    return f"{r[m + '_peak'] / KB:.1f} KB" if m + "_peak" in r else "-"


def plot(results: list[dict[str, Any]], png: Path) -> None:
    """Test accuracy against planned peak SRAM, one panel per model, the seeds' spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), dpi=100, squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        for m, style in (("auto", "o-"), ("paper", "s--"), ("last", "^:")):
            pts = [(r[m + "_peak"] / KB, 100 * r[m + "_acc"], 50 * (max(r[m + "_accs"]) - min(r[m + "_accs"])))
                   for r in res["rows"] if m + "_acc" in r]
            if pts:
                x, y, half = zip(*pts, strict=True)
                ax.errorbar(x, y, yerr=half, fmt=style, capsize=3, label={"last": "last:N"}.get(m, m))
        ax.set_title(res["model"])
        ax.set_xlabel("peak SRAM (KB)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, metadata={"Software": None})
    plt.close(fig)
