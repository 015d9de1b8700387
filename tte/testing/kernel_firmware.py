"""A Cortex-M firmware that runs kernel test graphs in QEMU and checks them against the numpy reference.

The host tests cover the portable C paths and the DSP paths with emulated instructions; this covers what only
runs on the target: the ACLE intrinsics and the inline assembly. Each graph becomes one C file (the
`c_harness` code with its own symbol prefix); main.c feeds it the inputs, compares every output byte with the
reference's and prints one line per failing run. The exit status is the number of failing runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from codegen.ops import RUNTIME_DIR
from tte import reference
from tte.ir import Graph
from tte.testing.c_harness import generate


def _bytes_literal(name: str, data: np.ndarray) -> str:
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    return f"static const uint8_t {name}[{max(raw.size, 1)}] = {{{', '.join(map(str, raw.tolist())) or '0'}}};"


def _run_block(k: int, j: int, graph: Graph, buffers: Mapping[str, int], x: Mapping[str, np.ndarray]) -> tuple[
        list[str], list[str]]:
    """Data arrays and main() statements for run j of graph k."""
    data, code = [], []
    for i, io in enumerate(graph.inputs):
        data.append(_bytes_literal(f"in_{k}_{j}_{i}", x[io.tensor]))
        code.append(f"    copy(g{k}_buffer({buffers[io.tensor]}), in_{k}_{j}_{i}, sizeof in_{k}_{j}_{i});")
    code.append(f"    g{k}_run();")
    for i, (name, want) in enumerate(reference.run(graph, x).items()):
        data.append(_bytes_literal(f"out_{k}_{j}_{i}", want))
        code.append(f"    failed += check(\"{graph.name} run {j}\", g{k}_buffer({buffers[name]}), out_{k}_{j}_{i}, "
                    f"sizeof out_{k}_{j}_{i});")
    return data, code


def main_source(graphs: Sequence[Graph], inputs: Sequence[Sequence[Mapping[str, np.ndarray]]],
                buffers: Sequence[Mapping[str, int]]) -> str:
    decls, data, body = [], [], []
    for k, graph in enumerate(graphs):
        decls += [f"void *g{k}_buffer(int index);", f"void g{k}_run(void);"]
        for j, x in enumerate(inputs[k]):
            d, c = _run_block(k, j, graph, buffers[k], x)
            data += d
            body += c
    return "\n".join([
        "#include <stdint.h>",
        '#include "tte_semihost.h"',
        *decls,
        *data,
        "static void copy(void *dst, const uint8_t *src, unsigned n)",
        "{",
        "    unsigned i;",
        "    for (i = 0; i < n; i++) ((uint8_t *)dst)[i] = src[i];",
        "}",
        "static int check(const char *name, const void *got, const uint8_t *want, unsigned n)",
        "{",
        "    unsigned i;",
        "    for (i = 0; i < n; i++) {",
        "        if (((const uint8_t *)got)[i] != want[i]) {",
        "            tte_sh_write0(name);",
        '            tte_sh_write0(": MISMATCH\\n");',
        "            return 1;",
        "        }",
        "    }",
        "    return 0;",
        "}",
        "int main(void)",
        "{",
        "    int failed = 0;",
        *body,
        "    return failed;",
        "}",
        "",
    ])


def write_sources(folder: Path, graphs: Sequence[Graph], inputs: Sequence[Sequence[Mapping[str, np.ndarray]]]
                  ) -> list[Path]:
    """The case files and main.c in `folder`, plus the runtime; the list to give `tte.targets.write_project`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, buffers = [], []
    for k, graph in enumerate(graphs):
        src = generate(graph, prefix=f"g{k}_")
        path = folder / f"case_{k:03d}.c"
        path.write_text(src.code)
        paths.append(path)
        buffers.append(src.buffers)
    main = folder / "main.c"
    main.write_text(main_source(graphs, inputs, buffers))
    return [RUNTIME_DIR, *paths, main]


def assert_passes_on_board(folder: Path, board: str, sources: Sequence[str | Path]) -> None:
    """Build the kernel firmware of `sources` (write_sources) for `board`, run it in QEMU: every run must pass."""
    from tte.targets import build, run_qemu, write_project

    fw = build(write_project(folder, board, sources, stack_bytes=8192))
    run = run_qemu(fw.elf, timeout=120, board=board)
    assert run.status == 0, f"{run.message}\n{run.output[-2000:]}"
