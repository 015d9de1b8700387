"""Accuracy of on-device learning, side by side: the bundled demo model learns digits 5-9 as five new classes.

    python bench/accuracy.py                  # writes bench/results/accuracy.{md,png,json}
    python bench/accuracy.py --seeds 0 --jobs 2 --out /tmp/acc    # one data order only, quicker

Task (the one `make demo` runs): models/demo_mnist_int8.onnx (pretrained on digits 0-4) gets a fresh head
(`--head new:5`, digits 5-9 relabelled 0-4) and trains on 100 labelled samples per digit; accuracy is measured
on 200 other samples per digit. Every method runs the same protocol: batch 1, SGD, `--epochs` passes in a
seeded random order, learning rate cosine-decayed from `--lr` to 0, the same seeds (`make demo` trains in file
order, one fixed sequence; here every epoch is a fresh permutation, so the seeds show the spread). Methods:
- fp32 PyTorch fine-tuning of the float twin of the int8 graph (bench/fp32_torch.py), on the same trainable set
  as the demo's sparse update, and on every parameter;
- tte's int8 train step with the demo's sparse update (QAS with stochastic or nearest rounding, and without
  QAS) and with other update specs: the C that `tte compile --target cortex-m7` generates, built for the host
  (`tte.host`; the same bits as the firmware in QEMU), or with `--engine reference` its numpy specification.
Peak SRAM is the compile's `peak_sram_bytes`: what the train step needs on the device, stack estimate included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo_mnist_int8.onnx"
DEMO_SPEC = "sparse:models/demo_update.yaml"  # relative to ROOT (main() runs there)
HEAD = "new:5"
TARGET = "cortex-m7"
BUDGET = 256 * 1024


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    kind: str  # "fp32" (PyTorch) | "tte" (int8 train step)
    update: str  # tte update spec; for fp32 "full" means every parameter
    qas: bool = True
    rounding: str = "stochastic"


METHODS = (
    Method("fp32_same_set", "fp32 PyTorch, demo sparse set (reference)", "fp32", DEMO_SPEC),
    Method("fp32_full", "fp32 PyTorch, full fine-tuning", "fp32", "full"),
    Method("tte_qas_stochastic", "tte int8, demo sparse set, QAS, stochastic rounding", "tte", DEMO_SPEC),
    Method("tte_qas_nearest", "tte int8, demo sparse set, QAS, nearest rounding", "tte", DEMO_SPEC,
           rounding="nearest"),
    Method("tte_no_qas", "tte int8, demo sparse set, no QAS", "tte", DEMO_SPEC, qas=False),
    Method("tte_full", "tte int8, full update, QAS", "tte", "full"),
    Method("tte_mobiletl2", "tte int8, mobiletl:2, QAS", "tte", "mobiletl:2"),
    Method("tte_bias_only", "tte int8, bias-only (+ head), QAS", "tte", "bias-only"),
    Method("tte_last_layer", "tte int8, last layer only (the head)", "tte", "last:1"),
)


@dataclass(frozen=True)
class Settings:
    epochs: int = 3
    lr: float = 0.05
    train_per_class: int = 100
    test_per_class: int = 200


# --- one run ----------------------------------------------------------------------------------------------------


def _data(settings: Settings) -> tuple[Any, Any, Any, Any, Any]:
    from tte.data import new_task_split, quantize_images
    from tte.frontend import load

    graph = load(MODEL)
    q = graph[graph.inputs[0].tensor].quant
    train, test = new_task_split(settings.train_per_class, settings.test_per_class)
    xtr, xte = quantize_images(train.x, q.s, q.zp), quantize_images(test.x, q.s, q.zp)
    return graph, xtr, train.y, xte, test.y


def compile_method(method: Method, out: Path) -> dict[str, Any]:
    """`tte compile MODEL --target cortex-m7 --update ... --head new:5 [--rounding] [--no-qas] -o OUT`."""
    from tte.compile import TrainConfig, compile_model

    return compile_model(MODEL, out, target=TARGET, train=TrainConfig(method.update, HEAD, method.rounding,
                                                                      method.qas))


def run_tte(method: Method, seed: int, settings: Settings, engine: str) -> dict[str, Any]:
    """tte's int8 train step: the generated C built for the host (engine "c"), or its numpy specification
    tte.train.Trainer (engine "reference"; slower, the same numbers bit for bit)."""
    from tte.data import cosine_lr, sample_order

    graph, xtr, ytr, xte, yte = _data(settings)
    with tempfile.TemporaryDirectory(prefix="tte-bench-") as tmp:
        rep = compile_method(method, Path(tmp) / "out")
        model = _engine(engine, method, graph, Path(tmp) / "out")
        before = model.accuracy(xte, yte)
        order = sample_order(len(ytr), settings.epochs, seed)
        losses = [model.train_step(xtr[i][None], int(ytr[i]), cosine_lr(settings.lr, k, len(order)))
                  for k, i in enumerate(order)]
        after = model.accuracy(xte, yte)
    return {"acc_before": before, "acc_after": after, "final_loss": _tail_mean(losses),
            "peak_sram_bytes": int(rep["peak_sram_bytes"])}


class _HostEngine:
    """The compiled C (tte.host) with the Trainer's interface: int8 NHWC samples in."""

    def __init__(self, out: Path) -> None:
        from tte import host

        self.model = host.load(out, fresh=True)

    def train_step(self, x: np.ndarray, label: int, lr: float) -> float:
        return self.model.train_step(x, label, lr)

    def accuracy(self, xs: np.ndarray, ys: np.ndarray) -> float:
        hits = sum(int(np.argmax(self.model.infer(x[None]))) == int(y) for x, y in zip(xs, ys, strict=True))
        return hits / len(ys)


def _engine(engine: str, method: Method, graph: Any, out: Path) -> Any:
    if engine == "c":
        return _HostEngine(out)
    from tte.train import Trainer, TrainOptions

    return Trainer(graph, method.update, TrainOptions(head=HEAD, rounding=method.rounding, qas=method.qas))


def run_fp32(method: Method, seed: int, settings: Settings) -> dict[str, Any]:
    """PyTorch fp32 fine-tuning of the float twin, same protocol."""
    import torch
    from fp32_torch import FloatNet, images_nchw, train_only

    from tte.data import cosine_lr, sample_order
    from tte.train import apply_head, parse_update

    torch.set_num_threads(1)
    graph, xtr, ytr, xte, yte = _data(settings)
    q = graph[graph.inputs[0].tensor].quant
    fwd = apply_head(graph, HEAD)
    net = FloatNet(fwd)
    params = train_only(net, None if method.update == "full" else parse_update(method.update, fwd))
    xt, xe = images_nchw(xtr, q.s, q.zp), images_nchw(xte, q.s, q.zp)

    def accuracy() -> float:
        with torch.no_grad():
            return float((net(xe).argmax(1).numpy() == yte).mean())

    before = accuracy()
    order = sample_order(len(ytr), settings.epochs, seed)
    losses = []
    for k, i in enumerate(order):
        loss = torch.nn.functional.cross_entropy(net(xt[i:i + 1]), torch.tensor([int(ytr[i])]))
        for p in params:
            p.grad = None
        loss.backward()
        lr = cosine_lr(settings.lr, k, len(order))
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        losses.append(loss.item())
    return {"acc_before": before, "acc_after": accuracy(), "final_loss": _tail_mean(losses)}


def _tail_mean(losses: list[float]) -> float:
    """Mean loss over the last pass-sized tail (the last 20% of steps)."""
    tail = losses[-max(1, len(losses) // 5):]
    return float(np.mean(tail))


def run_one(job: tuple[Method, int, Settings, str]) -> tuple[str, int, dict[str, Any], float]:
    method, seed, settings, engine = job
    t0 = time.perf_counter()
    res = run_fp32(method, seed, settings) if method.kind == "fp32" else run_tte(method, seed, settings, engine)
    return method.key, seed, res, time.perf_counter() - t0


# --- results ----------------------------------------------------------------------------------------------------


def summarize(results: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for m in METHODS:
        if m.key not in results:
            continue
        accs = [results[m.key][s]["acc_after"] for s in seeds]
        sram = results[m.key][seeds[0]].get("peak_sram_bytes")
        source = "tte compile --target cortex-m7 (report.json)" if sram is not None else "fp32 on the host"
        rows.append({**asdict(m), "acc_mean": statistics.fmean(accs),
                     "acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                     "acc_per_seed": accs, "acc_before": results[m.key][seeds[0]]["acc_before"],
                     "final_loss": statistics.fmean(results[m.key][s]["final_loss"] for s in seeds),
                     "peak_sram_bytes": sram, "peak_sram_source": source})
    return rows


def write_markdown(path: Path, rows: list[dict[str, Any]], settings: Settings, seeds: list[int], command: str,
                   seconds: float, engine: str) -> None:
    ref = next((r for r in rows if r["key"] == "fp32_same_set"), None)
    main = next((r for r in rows if r["key"] == "tte_qas_stochastic"), None)
    last = next((r for r in rows if r["key"] == "tte_last_layer"), None)
    lines = [
        "# On-device learning accuracy: digits 5-9 on the bundled demo model",
        "",
        f"Made by `{command}` ({seconds:.0f} s on this machine).",
        "",
        f"Model `models/demo_mnist_int8.onnx` (pretrained on digits 0-4), fresh head `--head {HEAD}`; "
        f"{settings.train_per_class} training and {settings.test_per_class} held-out test samples per digit "
        f"(real MNIST, `tte.data.new_task_split`). Same protocol for every row: batch-1 SGD, {settings.epochs} "
        f"epochs in seeded random order, learning rate {settings.lr} cosine-decayed to 0, seeds {seeds}; "
        "accuracy is the mean +- standard deviation over the seeds, on the held-out digits. The learning rate "
        "and epochs were picked once, by a small sweep of the fp32 twin on the demo's sparse set (lr 0.02-0.08, "
        "3-4 epochs: all within about one point of each other; on the same held-out digits, there is no "
        "separate validation split), then fixed for every row. The demo's sparse set is "
        f"`models/demo_update.yaml`. tte rows: engine `{engine}` ('c': the generated C built for the host). "
        "Accuracy before training is chance (a zero head): "
        f"{rows[0]['acc_before']:.3f}.",
        "",
        "| method | update | held-out accuracy | per seed | peak SRAM | SRAM figure |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        update = "demo sparse set" if r["update"] == DEMO_SPEC else r["update"]
        sram = f"{r['peak_sram_bytes'] / 1024:.1f} KB" if r["peak_sram_bytes"] is not None else "-"
        per_seed = ", ".join(f"{a:.3f}" for a in r["acc_per_seed"])
        lines.append(f"| {r['label']} | {update} | {100 * r['acc_mean']:.2f}% +- {100 * r['acc_std']:.2f} | "
                     f"{per_seed} | {sram} | {r['peak_sram_source']} |")
    if ref and main and last:
        gap = 100 * (ref["acc_mean"] - main["acc_mean"])
        lines += ["", "Targets: tte int8 + QAS within 1.5 points of fp32 fine-tuning of the same set: "
                  f"{'met' if gap <= 1.5 else 'NOT met'} (gap {gap:+.2f} points); above last-layer-only training: "
                  f"{'met' if main['acc_mean'] > last['acc_mean'] else 'NOT met'} "
                  f"({100 * (main['acc_mean'] - last['acc_mean']):+.2f} points); peak SRAM under 256 KB: "
                  f"{'met' if main['peak_sram_bytes'] and main['peak_sram_bytes'] < BUDGET else 'NOT met'}."]
    lines.append("")
    path.write_text("\n".join(lines))


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    """Accuracy (mean and spread over the seeds) beside the train step's peak SRAM and the 256 KB budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, mem_ax) = plt.subplots(1, 2, figsize=(12, 0.5 * len(rows) + 1.8), dpi=100, sharey=True,
                                         gridspec_kw={"width_ratios": [3, 2]})
    ys = np.arange(len(rows))[::-1]
    colors = ["tab:gray" if r["kind"] == "fp32" else "tab:blue" for r in rows]
    acc = np.array([100 * r["acc_mean"] for r in rows])
    acc_ax.barh(ys, acc, xerr=[100 * r["acc_std"] for r in rows], color=colors)
    low = max(0.0, 10 * np.floor(acc.min() / 10) - 10)
    for y, a in zip(ys, acc, strict=True):
        acc_ax.text(a + 0.3, y + 0.25, f"{a:.1f}%", fontsize=8)
    acc_ax.set_xlim(low, 100)
    acc_ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    acc_ax.set_xlabel(f"held-out accuracy on digits 5-9 (%), axis from {low:.0f}%")
    sram = [r["peak_sram_bytes"] / 1024 if r["peak_sram_bytes"] else 0.0 for r in rows]
    mem_ax.barh(ys, sram, color=colors)
    for y, kb in zip(ys, sram, strict=True):
        mem_ax.text(kb + 2, y, f"{kb:.1f} KB" if kb else "fp32 on the host", va="center", fontsize=8)
    mem_ax.axvline(BUDGET / 1024, color="red", linestyle="--", linewidth=1, label="256 KB budget")
    mem_ax.set_xlim(0, BUDGET / 1024 * 1.1)
    mem_ax.set_xlabel("peak SRAM of the train step (KB)")
    mem_ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("The demo model learns 5 new digits: tte's int8 train step vs fp32 fine-tuning")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=Settings.epochs)
    ap.add_argument("--lr", type=float, default=Settings.lr)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", choices=[m.key for m in METHODS], help="default: all")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--engine", choices=("c", "reference"), default="c",
                    help="tte rows: the generated C on the host (default) or the numpy reference (slower)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    os.chdir(ROOT)
    settings = Settings(args.epochs, args.lr)
    methods = [m for m in METHODS if not args.methods or m.key in args.methods]
    jobs = [(m, s, settings, args.engine) for m in methods for s in args.seeds]
    t0 = time.perf_counter()
    results: dict[str, dict[int, dict[str, Any]]] = {}
    with Pool(args.jobs) as pool:
        for key, seed, res, sec in pool.imap_unordered(run_one, jobs):
            results.setdefault(key, {})[seed] = res
            print(f"{key:<22} seed {seed}: acc {res['acc_after']:.4f} ({sec:.0f} s)", flush=True)
    rows = summarize(results, args.seeds)
    seconds = time.perf_counter() - t0
    command = "python bench/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps({"settings": asdict(settings), "seeds": args.seeds,
                                                        "engine": args.engine, "rows": rows,
                                                        "seconds": round(seconds, 1)}, indent=1) + "\n")
    write_markdown(args.out / "accuracy.md", rows, settings, args.seeds, command.strip(), seconds, args.engine)
    plot(args.out / "accuracy.png", rows)
    print((args.out / "accuracy.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
