"""The compiled twin of `placement.place` (placement.c), built once with the host C compiler, loaded with cffi.

placement.py stays the reference and the fallback: where no C compiler works, or with TTE_PLACEMENT=python, the
planner places in Python, with the same result (tests/test_placement_native.py compares both on random and real
plans). Compiled, a train step's placement takes well under a millisecond instead of several, which is what lets
the scheme search of `--update auto` plan thousands of candidates (bench/cost_speed.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CDEF = """
int tte_place(int32_t n, const int64_t *size, const int32_t *first, const int32_t *last, const int32_t *name_rank,
              int64_t alignment, int32_t n_fixed, const int32_t *fixed_index, const int64_t *fixed_offset,
              int32_t n_links, const int32_t *link_a, const int32_t *link_b, const int64_t *link_delta,
              int32_t n_trials, const int32_t *trial_order, const int32_t *trial_tightest, int64_t *offsets_out,
              int64_t *arena_out, int32_t *trial_out, int32_t *error_out);
"""
FLAGS = ("-std=c99", "-O2", "-fPIC", "-shared")
SOURCE = Path(__file__).with_name("placement.c")
CONTRADICTORY_LINK, BAD_FIXED = 1, 2


def enabled() -> bool:
    return os.environ.get("TTE_PLACEMENT", "native") != "python" and _library() is not None


@functools.lru_cache(maxsize=1)
def _library() -> tuple[Any, Any] | None:
    """(ffi, lib), or None when the library cannot be built here (no compiler: the Python placement runs)."""
    import cffi

    from tte.host import cache_dir

    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(repr((cc, FLAGS)).encode() + source).hexdigest()[:16]
    lib = cache_dir() / f"placement-{key}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".tmp{os.getpid()}.so")
        proc = subprocess.run([cc, *FLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True)
        if proc.returncode != 0:
            return None
        os.replace(tmp, lib)  # atomic: parallel builds of the same source agree
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(lib))


def place(bufs: Sequence[Any], alignment: int, fixed: Mapping[int, int], links: Sequence[tuple[int, int, int]],
          trials: Sequence[tuple[int, bool]]) -> tuple[list[int], int, int]:
    """`placement.place` in C: offsets by buffer index, the arena and the index of the trial that won. `trials`
    are (order number in placement.ORDERS, tightest fit?). Raises ValueError as placement.py does."""
    built = _library()
    assert built is not None, "call enabled() first"
    ffi, lib = built
    n = len(bufs)
    rank = [0] * n
    for r, i in enumerate(sorted(range(n), key=lambda i: bufs[i].name)):
        rank[i] = r
    offsets = ffi.new("int64_t[]", max(n, 1))
    arena, trial, error = ffi.new("int64_t *"), ffi.new("int32_t *"), ffi.new("int32_t *")
    status = lib.tte_place(
        n, ffi.new("int64_t[]", [b.size for b in bufs]), ffi.new("int32_t[]", [b.first for b in bufs]),
        ffi.new("int32_t[]", [b.last for b in bufs]), ffi.new("int32_t[]", rank), alignment,
        len(fixed), ffi.new("int32_t[]", list(fixed)), ffi.new("int64_t[]", list(fixed.values())),
        len(links), ffi.new("int32_t[]", [a for a, _, _ in links]), ffi.new("int32_t[]", [b for _, b, _ in links]),
        ffi.new("int64_t[]", [d for _, _, d in links]),
        len(trials), ffi.new("int32_t[]", [o for o, _ in trials]), ffi.new("int32_t[]", [int(t) for _, t in trials]),
        offsets, arena, trial, error)
    if status == CONTRADICTORY_LINK:
        a, b, _ = links[error[0]]
        raise ValueError(f"buffers {bufs[a].name}, {bufs[b].name}: contradictory relative offsets")
    if status == BAD_FIXED:
        raise ValueError(f"buffer {bufs[error[0]].name}: its fixed offset contradicts its links")
    if status != 0:
        raise MemoryError("placement: out of memory")
    return list(offsets[0:n]), int(arena[0]), int(trial[0])
