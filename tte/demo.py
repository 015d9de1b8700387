"""`make demo`: compile a small MobileNetV2-style model for the host, run it, and check C == reference.

The model is built in code (`tte.testing.models`), written as a full-integer .tflite file, and then goes
through exactly what a user runs: `tte compile build/demo/mbv2_tiny.tflite --target host -o build/demo/out`,
then `tte.host.load(out).infer(x)`; every output is compared with the numpy reference, bit for bit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from tte import host, report
from tte.compile import compile_model, load
from tte.passes.normalize import normalize
from tte.reference import run

DEMO_DIR = Path("build/demo")


def make_model(folder: Path) -> Path:
    """The demo model as a .tflite file (float input and output, int8 inside)."""
    from tte.testing.models import mobilenetv2
    from tte.testing.tflite_writer import write_tflite

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mbv2_tiny.tflite"
    path.write_bytes(write_tflite(mobilenetv2(float_io=True)))
    return path


def main(folder: Path = DEMO_DIR, samples: int = 5) -> int:
    """Build, compile, run and check; returns the exit status (0 when C == reference on every sample)."""
    model_path = make_model(folder)
    out = folder / "out"
    t0 = time.perf_counter()
    rep = compile_model(model_path, out, target="host")
    print(f"compiled {model_path} -> {out} in {time.perf_counter() - t0:.2f} s")
    print(report.summary(rep), end="")
    model = host.load(out)
    graph = normalize(load(model_path))
    rng = np.random.default_rng(0)
    exact = 0
    for i in range(samples):
        x = rng.uniform(-1, 1, model.inputs[0].user_shape).astype(np.float32)
        y = model.infer(x)
        expect = run(graph, model.inputs[0].to_int8(x))[graph.outputs[0].tensor]
        same = bool(np.array_equal(y, expect))
        exact += same
        scores = model.infer_float(x).ravel()
        print(f"  sample {i}: class {int(np.argmax(scores))} (score {scores.max():.3f}); C == reference: {same}")
    print(f"C == reference, bit for bit, on {exact}/{samples} inputs")
    return 0 if exact == samples else 1


if __name__ == "__main__":
    sys.exit(main())
