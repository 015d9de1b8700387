"""bench/node_profile.py: the per-node instruction profile of a model's firmware in QEMU (-DTTE_PROFILE build).

The demo model with a sparse update is profiled on Cortex-M7: every node of the inference and of the train
step gets a count, the counts add up to the whole call's, and the default build is untouched by the hooks.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from tte.cli import main as tte_main

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo_mnist_int8.onnx"
DEMO_SPEC = REPO / "models" / "demo_update.yaml"


def _bench_profile():
    spec = importlib.util.spec_from_file_location("bench_profile", REPO / "bench" / "node_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(out: Path, target: str) -> None:
    if not DEMO_MODEL.is_file():
        pytest.skip("models/demo_mnist_int8.onnx is missing (python models/make_demo_model.py)")
    args = ["compile", str(DEMO_MODEL), "--target", target, "--update", f"sparse:{DEMO_SPEC}", "--head", "new:5",
            "-o", str(out)]
    assert tte_main(args) == 0


def test_generated_c_wraps_every_node_in_empty_hooks(tmp_path: Path) -> None:
    """Every node of both entry points is wrapped, the ids match profile.json, and without TTE_PROFILE the hooks
    expand to nothing."""
    out = tmp_path / "host"
    _compile(out, "host")
    table = json.loads((out / "profile.json").read_text())
    name = table["model"]
    c = (out / f"{name}.c").read_text()
    ids = [int(k) for k in re.findall(r"TTE_PROFILE_BEGIN\((\d+)u\);", c)]
    assert ids == list(range(len(table["nodes"]))) == [int(k) for k in re.findall(r"TTE_PROFILE_END\((\d+)u\);", c)]
    assert {r["call"] for r in table["nodes"]} == {"infer", "train"}
    assert f"#define {name.upper()}_PROFILE_NODES {len(table['nodes'])}u" in (out / f"{name}.h").read_text()
    assert "#define TTE_PROFILE_BEGIN(k) ((void)0)" in c


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_profile_covers_every_node_and_adds_up(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    _compile(out, "cortex-m7")
    results = tmp_path / "results"
    assert _bench_profile().main([str(out), "--results", str(results), "--tag", "demo"]) == 0
    summary = json.loads((results / "profile_demo.json").read_text())
    table = json.loads((out / "profile.json").read_text())
    parts = summary["parts"]
    assert set(parts) == {"infer", "train"}
    ids = sorted(r["id"] for p in parts.values() for r in p["nodes"])
    assert ids == list(range(len(table["nodes"])))
    for call, p in parts.items():
        nodes = p["nodes"]
        # The harness's train command runs an inference before and after the step.
        assert {r["calls"] for r in nodes} == ({2} if call == "infer" else {1})
        # Each node is counted to a SysTick tick (40 instructions); the hooks' calls fall between the nodes.
        assert abs(p["instructions_per_call"] - p["node_sum"]) <= 0.01 * p["instructions_per_call"] + 40 * len(nodes)
        assert [r["instructions"] for r in nodes] == sorted((r["instructions"] for r in nodes), reverse=True)
        assert abs(sum(r["share"] for r in nodes) - 1.0) < 1e-9
        assert sum(k["instructions"] for k in p["kernels"]) == p["node_sum"]
    convs = [r for r in parts["infer"]["nodes"] if r["op"] == "conv2d"]
    assert convs and all(r["macs"] > 0 and r["instructions"] > r["macs"] / 2 for r in convs)
    assert (out / "build" / "cortex-m7-profile" / "firmware.elf").is_file()
    assert not (out / "build" / "cortex-m7").exists()  # the default build is left alone
    assert "| kernel | nodes | MACs |" in (results / "profile_demo.md").read_text()
