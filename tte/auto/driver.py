"""`tte compile MODEL --update auto --budget B [--data train.npz --eval val.npz]`: choose, compile, explain.

The output folder gets, beside the C code:
- `scheme.json`: the chosen scheme as a `sparse:` file (`--update sparse:OUT/scheme.json` compiles it again);
- `auto.json`: the caches of the contribution analysis and of the exact cost evaluations, keyed by model, head,
  data, settings and the planner's sources, so compiling into the same folder again repeats no run;
- `report.json` key `auto`: what was chosen, what each choice costs and gains (`tte report` prints it).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from tte.auto import ContribSettings, Data, choose, scheme_json
from tte.errors import TteError

AUTO_FILE = "auto.json"
SCHEME_FILE = "scheme.json"


def read_cache(out: str | os.PathLike) -> dict[str, Any]:
    """The auto.json of an earlier compile into OUT ({} when absent or unreadable)."""
    path = Path(out) / AUTO_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def load_data(path: str | os.PathLike | None) -> Data | None:
    if path is None:
        return None
    from tte.simulate import load_data as read

    x, y = read(path)
    return Data(x, y)


def compile_auto(model: str | os.PathLike, out: str | os.PathLike, train: Any, budget: int | None,
                 name: str | None = None, target: str = "host", data: str | os.PathLike | None = None,
                 eval_data: str | os.PathLike | None = None, mac_budget: int | None = None,
                 progress: bool = True, settings: ContribSettings | None = None, jobs: int | None = None
                 ) -> dict[str, Any]:
    """Choose the scheme, compile it into OUT with scheme.json and auto.json beside it; returns the report
    (its `auto` key has `timings_s` too, which the written report.json leaves out to stay deterministic)."""
    from tte import compile as compiler

    if eval_data is not None and data is None:
        raise TteError("--eval needs --data", hint="give the training data of the contribution analysis")
    graph = compiler.load(model)
    train_set, eval_set = load_data(data), load_data(eval_data)
    cache = read_cache(out)
    result = choose(graph, budget, train.head, target, train_set, eval_set, mac_budget=mac_budget,
                    settings=settings, cache=cache.get("contribution"), jobs=jobs, progress=progress,
                    options=train.options(), cost_cache=cache.get("costs"))
    config = replace(train, update="auto", scheme=result.scheme)
    compiled = compiler.build(graph, name or compiler.default_name(model), target, Path(model).name, budget,
                              config)
    report = compiled.report
    if report["peak_sram_bytes"] != result.cost.peak_sram_bytes:  # the cost model is the compile: a bug if not
        raise RuntimeError(f"auto: the cost model said {result.cost.peak_sram_bytes} B, the compile "
                           f"{report['peak_sram_bytes']} B")
    report["auto"] = result.explain()  # without timings: the output files stay deterministic
    files = dict(compiled.files)
    files["report.json"] = json.dumps(report, indent=1) + "\n"
    files[SCHEME_FILE] = scheme_json(result)
    files[AUTO_FILE] = json.dumps({"contribution": result.contrib_cache, "costs": result.costs_cache},
                                  indent=0) + "\n"
    compiler.write_output(out, files)
    report["auto"]["timings_s"] = {k: round(v, 3) for k, v in result.timings.items()}
    return report
