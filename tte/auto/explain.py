"""The `--update auto` part of `tte report`: what was chosen, how, and what each choice costs and gains."""

from __future__ import annotations

from typing import Any


def explain_lines(auto: dict[str, Any]) -> list[str]:
    """Text lines from report.json's `auto` key."""
    base_acc = auto.get("classifier_only_accuracy")
    measured = auto["method"] == "contribution analysis"
    gain_unit = "gain" if measured else "heuristic value"
    lines = [
        f"  --update auto ({auto['method']}): budget {auto['budget_bytes']:,} B"
        + (f", backward MACs <= {auto['mac_budget']:,}" if auto.get("mac_budget") else "")
        + f"; peak {auto['peak_sram_bytes']:,} B, {auto['macs_backward']:,} backward MACs",
        f"    classifier alone: peak {auto['classifier_only_peak_bytes']:,} B"
        + (f", accuracy {base_acc:.3f} after the short fine-tuning" if base_acc is not None else ""),
        f"    {auto['candidates']} candidates over {auto['reachable_layers']} layers the backward pass can reach "
        f"within the budget; the chosen ones (sum of {gain_unit}s {auto['expected_gain']:+.3f}):",
    ]
    if measured:
        lines += [f"    {auto.get('measured_candidates', 0)} candidates measured by a fine-tuning run (learning rate "
                  f"{auto.get('contribution_lr')}); measured = drop of the validation loss (nats) from the classifier "
                  "alone; gain = that combined with the depth prior fitted to it (tte.auto.gains)"]
    lines.append(f"    {'item':<44} {'+bytes':>8} {'+MACs':>10} {gain_unit:>16}" + (f" {'measured':>9}"
                                                                                    if measured else ""))
    for row in auto["chosen"]:
        meas = row.get("measured")
        lines.append(f"    {row['item'][:44]:<44} {row['bytes']:>8,} {row['macs']:>10,} {row['gain']:>+16.3f}"
                     + ((f" {meas:>+9.3f}" if meas is not None else f" {'-':>9}") if measured else ""))
    if not auto["chosen"]:
        lines.append("    (nothing beyond the classifier fits or helps)")
    lines.append("    +bytes: the item's SRAM (trained weights or bias, saved input channels) in the search's "
                 "additive model; the peak is the planner's")
    lines += [f"    search: {entry}" for entry in auto.get("search_log", [])]
    return lines
