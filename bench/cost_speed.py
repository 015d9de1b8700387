"""How fast is the exact cost model of `--update auto` (tte/auto/cost.py)? Seconds per scheme, cold.

For each paper model and budget, `CostModel.exact` (the real planner, as `tte compile` runs it, row-stripe stage
choice included) is timed on the same seeded random schemes: 1-8 of the last 25 layers, each its bias and with
probability 1/2 a weight ratio, every scheme new to the memo (cold). Beside it: the additive surrogate the search
screens candidates with (`Surrogate.peak`), per candidate, its largest error against the exact peak and how
often it is below it (then the search's exact check repairs the scheme), and how many schemes the exact model
sees per second.

Then the candidates a scheme search plans: its answer near the budget (deep schemes of 30-60 items) with one
more item, batch-planned with `CostModel.fitting_many` on `--jobs` worker processes: candidates per second; and a
whole data-free search (`search` with the prior as gains): how many candidates it planned and in what time.

Usage: python bench/cost_speed.py [--models ../shared/models] [--schemes 20] [--moves 200] [--jobs 2]
Writes bench/results/cost_speed.md and .json. The times depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tte.auto.cost import RATIOS, CostModel, Item, reach_table  # noqa: E402
from tte.frontend import load  # noqa: E402

KB = 1024
CASES = [("mbv2-w0.35", 128), ("mbv2-w0.35", 256), ("proxyless-w0.3", 160), ("mcunet-5fps", 192)]


def random_schemes(cm: CostModel, count: int, seed: int = 0) -> list[list[Item]]:
    rng = random.Random(seed)
    layers = [n.name for n in cm.layers][-25:]
    schemes = []
    for _ in range(count):
        items = []
        for name in rng.sample(layers, rng.randint(1, 8)):
            items.append(Item(name, "bias"))
            if rng.random() < 0.5:
                items.append(Item(name, "weight", rng.choice(RATIOS)))
        schemes.append(items)
    return schemes


def measure(models: Path, model: str, budget_kb: int, count: int) -> dict[str, Any]:
    cm = CostModel(load(models / f"{model}-int8.onnx"), "new:10", "stm32f746", budget_kb * KB)
    cm.exact(())  # the classifier-only plan: imports and per-model caches, as a search starts with it
    schemes = random_schemes(cm, count)
    times, fits, exact = [], 0, []
    for s in schemes:
        t0 = time.perf_counter()
        c = cm.exact(s)
        times.append(time.perf_counter() - t0)
        fits += c.peak_sram_bytes <= cm.budget
        exact.append(c.peak_sram_bytes)
    sur = reach_table(cm, cm.budget)
    known = [s for s in schemes if all(i in sur.bytes for i in s)] or [[]]
    # the surrogate against the exact peak where it knows every item (layers within the budget's reach)
    errs = [(sur.peak(s) - e) / e for s, e in zip(schemes, exact, strict=True) if all(i in sur.bytes for i in s)]
    t0 = time.perf_counter()
    reps = 2000
    for k in range(reps):
        sur.peak(known[k % len(known)])
    sur_us = (time.perf_counter() - t0) / reps * 1e6
    return {"model": model, "budget_kb": budget_kb, "schemes": count, "fit": fits,
            "mean_s": statistics.mean(times), "median_s": statistics.median(times), "max_s": max(times),
            "per_second": 1 / statistics.mean(times), "surrogate_us": sur_us, "surrogate_compared": len(errs),
            "surrogate_err_max": max(map(abs, errs), default=0.0),
            "surrogate_under": sum(e < 0 for e in errs)}


def measure_search(models: Path, model: str, budget_kb: int, moves: int, jobs: int) -> dict[str, Any]:
    """The MILP answer with one more item each, batch-planned; then a whole data-free search."""
    from tte.auto.cost import canonical
    from tte.auto.search import heuristic_gains, search, solve

    def model_cost() -> CostModel:
        cm = CostModel(load(models / f"{model}-int8.onnx"), "new:10", "stm32f746", budget_kb * KB)
        cm.exact(())
        return cm

    cm = model_cost()
    sur = reach_table(cm, cm.budget)
    gains = heuristic_gains(cm, sur)
    start = solve(sur, gains, cm.budget)
    more = sorted((i for i in gains if gains[i] > 0 and i not in start), key=lambda i: -gains[i])
    cands = list(dict.fromkeys(canonical((*start, i)) for i in more))[:moves]
    with cm.parallel(jobs):
        t0 = time.perf_counter()
        fits = cm.fitting_many(cands)
        batch_s = time.perf_counter() - t0
    cm = model_cost()
    sur = reach_table(cm, cm.budget)
    t0 = time.perf_counter()
    before = cm.evaluations
    res = search(cm, sur, gains, cm.budget)
    return {"model": model, "budget_kb": budget_kb, "start_items": len(start), "moves": len(cands),
            "moves_fit": sum(c is not None and c.peak_sram_bytes <= cm.budget for c in fits), "batch_s": batch_s,
            "per_second": len(cands) / batch_s, "search_s": time.perf_counter() - t0,
            "search_evaluations": cm.evaluations - before, "search_items": len(res.items),
            "search_peak": res.cost.peak_sram_bytes}


def write(rows: list[dict[str, Any]], stem: Path, command: str, searches: list[dict[str, Any]]) -> None:
    load_avg = os.getloadavg()[0]
    lines = ["# Exact cost model speed (`CostModel.exact`, cold)", "",
             f"Made by `{command}` on {os.cpu_count()} cores, load average {load_avg:.1f}. Each scheme is new to "
             "the memo: the real planner runs (the row-stripe stage choice included).", "",
             "| model | budget | schemes (fit) | mean s | median s | max s | exact schemes / s | surrogate us | "
             "surrogate vs exact: compared, max error, below exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['budget_kb']} KB | {r['schemes']} ({r['fit']}) | {r['mean_s']:.3f} | "
                     f"{r['median_s']:.3f} | {r['max_s']:.3f} | {r['per_second']:.1f} | {r['surrogate_us']:.0f} | "
                     f"{r['surrogate_compared']}, {100 * r['surrogate_err_max']:.1f}%, {r['surrogate_under']} |")
    jobs = searches[0]["jobs"] if searches else 1
    lines += ["", f"## The candidates of a search ({jobs} worker processes)", "",
              "The MILP's answer with one more item (the `--moves` of most gain), planned with `fitting_many` "
              "(exact: the cost of a scheme that fits, or proof by the stripe floors that it does not); then one "
              "whole data-free search (MILP, repairs, fill), one process.", "",
              "| model | budget | MILP answer: items | candidates planned (fit) | seconds | candidates / s | "
              "search: candidates planned | search seconds | search: items, peak |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in searches:
        lines.append(f"| {r['model']} | {r['budget_kb']} KB | {r['start_items']} | {r['moves']} ({r['moves_fit']}) | "
                     f"{r['batch_s']:.1f} | {r['per_second']:.0f} | {r['search_evaluations']} | {r['search_s']:.1f} | "
                     f"{r['search_items']}, {r['search_peak'] / KB:.1f} KB |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "load": load_avg, "rows": rows,
                                                     "searches": searches}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=REPO.parent / "shared" / "models")
    ap.add_argument("--schemes", type=int, default=20)
    ap.add_argument("--moves", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "cost_speed")
    args = ap.parse_args()
    rows, searches = [], []
    for model, budget in CASES:
        rows.append(measure(args.models, model, budget, args.schemes))
        r = rows[-1]
        print(f"{model} @{budget} KB: {r['mean_s']:.3f} s mean, {r['max_s']:.3f} s max, "
              f"surrogate {r['surrogate_us']:.0f} us", flush=True)
    for model, budget in CASES:
        searches.append({**measure_search(args.models, model, budget, args.moves, args.jobs), "jobs": args.jobs})
        r = searches[-1]
        print(f"{model} @{budget} KB: {r['moves']} candidates in {r['batch_s']:.1f} s ({r['per_second']:.0f}/s); "
              f"search {r['search_evaluations']} candidates in {r['search_s']:.1f} s", flush=True)
    write(rows, args.results, "python bench/cost_speed.py" + "".join(f" {a}" for a in sys.argv[1:]), searches)


if __name__ == "__main__":
    main()
