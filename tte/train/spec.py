"""The update spec: which parameters a train step changes (DESIGN.md section 5), and the `--head` option.

`parse_update(text, graph)` understands
- `bias-only`: the bias of every weight layer;
- `last:N`: weights and biases of the last N weight layers;
- `full`: every weight and bias;
- `mobiletl:K`: the top K inverted-residual blocks (conv1x1 -> depthwise -> conv1x1 [-> add]): biases of the
  expand and depthwise convs, weights and bias of the projection conv;
- `sparse:FILE[#ENTRY]`: a JSON or YAML scheme `{"bias": [node, ...], "weights": {node: ratio | [channels]},
  "classifier": "full"}`; files with several schemes (like shared/models/paper_schemes.json) select one with
  `#model/scheme`;
- `auto`: chosen under a memory budget by `tte.auto` (tte compile resolves it into a scheme before parsing).

A weight is trained on a subset of its input channels (depthwise: of its channels). A ratio selects the
channels of largest magnitude (sum of |w_real| over the other axes, ties to the lower index); a list names them.
A fresh fp32 head (`--head new:N`) is always trained in full.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tte.errors import TteError
from tte.ir import Graph, Node

WEIGHT_OPS = ("conv2d", "depthwise_conv2d", "fully_connected", "fully_connected_f32")
_SCHEME_KEYS = {"bias", "weights", "classifier"}


@dataclass(frozen=True)
class LayerUpdate:
    """What one weight layer trains: its bias, and the weight's input channels (empty: weight frozen)."""

    node: str
    op: str
    bias: bool
    channels: tuple[int, ...]
    in_channels: int

    @property
    def weight(self) -> bool:
        return bool(self.channels)

    @property
    def full_weight(self) -> bool:
        return len(self.channels) == self.in_channels

    def describe(self) -> str:
        parts = ["bias"] if self.bias else []
        if self.weight:
            parts.append("weight" if self.full_weight else f"weight[{len(self.channels)}/{self.in_channels} ch]")
        return "+".join(parts)


@dataclass(frozen=True)
class UpdateSpec:
    """The parsed update spec: one `LayerUpdate` per layer that trains something, in graph order."""

    text: str
    layers: tuple[LayerUpdate, ...]

    def layer(self, node: str) -> LayerUpdate | None:
        for lu in self.layers:
            if lu.node == node:
                return lu
        return None

    def names(self) -> list[str]:
        return [lu.node for lu in self.layers]


@dataclass(frozen=True)
class HeadSpec:
    """`--head`: keep the int8 classifier, make it an fp32 layer, or replace it by a fresh one of N outputs."""

    kind: str  # "keep" | "fp32" | "new"
    classes: int = 0

    def __str__(self) -> str:
        return f"new:{self.classes}" if self.kind == "new" else self.kind


def parse_head(text: str | HeadSpec) -> HeadSpec:
    """Parse `keep`, `fp32` or `new:N`."""
    if isinstance(text, HeadSpec):
        return text
    t = text.strip()
    if t in ("keep", "fp32"):
        return HeadSpec(t)
    if t.startswith("new:"):
        n = _positive_int(t[4:], "--head new:N")
        return HeadSpec("new", n)
    raise TteError(f"unknown --head '{text}'", hint="use keep, fp32 or new:N (N = number of classes)")


# --- weight layers ----------------------------------------------------------------------------------------------


def weight_layers(graph: Graph) -> list[Node]:
    """The nodes that own a weight tensor, in graph order."""
    return [n for n in graph.nodes if n.op in WEIGHT_OPS]


def in_channels(node: Node, graph: Graph) -> int:
    w = graph[node.inputs[1]]
    if node.op == "depthwise_conv2d":
        return w.shape[3] // int(node.attrs.get("multiplier", 1))
    return w.shape[-1]


def channel_importance(node: Node, graph: Graph) -> np.ndarray:
    """Sum of |w_real| over every axis but the input channel (depthwise: per input channel)."""
    w = graph[node.inputs[1]]
    data = np.abs(w.data.astype(np.float64))
    if w.quant is not None:
        scale = np.asarray(w.quant.scale, np.float64)
        shape = [1] * data.ndim
        if w.quant.axis is not None:
            shape[w.quant.axis] = -1
        data = data * scale.reshape(shape)
    if node.op == "depthwise_conv2d":
        _, kh, kw, cm = w.shape
        mult = int(node.attrs.get("multiplier", 1))
        return data.reshape(kh, kw, cm // mult, mult).sum(axis=(0, 1, 3))
    return data.reshape(-1, data.shape[-1]).sum(axis=0)


def top_channels(node: Node, graph: Graph, ratio: float) -> tuple[int, ...]:
    """The round(ratio * n) (at least 1) input channels of largest magnitude, in ascending index order."""
    n = in_channels(node, graph)
    k = min(n, max(1, int(np.floor(ratio * n + 0.5))))
    imp = channel_importance(node, graph)
    order = sorted(range(n), key=lambda i: (-imp[i], i))
    return tuple(sorted(order[:k]))


def mobiletl_blocks(graph: Graph) -> list[tuple[Node, Node, Node]]:
    """Inverted-residual blocks found structurally: conv1x1 -> depthwise -> conv1x1, each feeding only the next."""
    blocks = []
    for dw in graph.nodes:
        if dw.op != "depthwise_conv2d":
            continue
        expand = graph.producer(dw.inputs[0])
        users = graph.consumers(dw.outputs[0])
        if expand is None or not _is_conv1x1(expand, graph) or len(users) != 1 or not _is_conv1x1(users[0], graph):
            continue
        if len(graph.consumers(expand.outputs[0])) != 1:
            continue
        blocks.append((expand, dw, users[0]))
    return blocks


def _is_conv1x1(node: Node, graph: Graph) -> bool:
    return node.op == "conv2d" and graph[node.inputs[1]].shape[1:3] == (1, 1)


# --- parsing ----------------------------------------------------------------------------------------------------


def parse_update(text: str | UpdateSpec, graph: Graph) -> UpdateSpec:
    """Parse an `--update` value against `graph` (after `apply_head`); raise TteError on user mistakes."""
    if isinstance(text, UpdateSpec):
        return text
    t = text.strip()
    layers = weight_layers(graph)
    if not layers:
        raise TteError("the model has no weight layers (conv, depthwise, fully connected) to train")
    if t == "bias-only":
        plan = {n.name: (True, ()) for n in layers}
    elif t == "full":
        plan = {n.name: (True, _all(n, graph)) for n in layers}
    elif t.startswith("last:"):
        k = _positive_int(t[5:], "--update last:N")
        if k > len(layers):
            raise TteError(f"--update {t}: the model has only {len(layers)} weight layers",
                           hint=f"use last:1 ... last:{len(layers)} or full")
        plan = {n.name: (True, _all(n, graph)) for n in layers[-k:]}
    elif t.startswith("mobiletl:"):
        plan = _mobiletl(t, graph)
    elif t.startswith("sparse:"):
        scheme, where = load_scheme(t[7:])
        return scheme_spec(scheme, graph, text=t, where=where)
    elif t == "auto":  # resolved before parsing, by tte.auto (tte compile does it)
        raise TteError("--update auto is chosen by `tte compile --update auto --budget SIZE` (or tte.auto.choose)",
                       hint="compile with --budget; the chosen scheme is then OUT/scheme.json (--update sparse:...)")
    else:
        raise TteError(f"unknown --update '{text}'",
                       hint="use bias-only, last:N, full, mobiletl:K, sparse:FILE (JSON/YAML, FILE#model/scheme) "
                            "or auto")
    return _finish(t, plan, graph)


def _mobiletl(text: str, graph: Graph) -> dict[str, tuple[bool, tuple[int, ...]]]:
    k = _positive_int(text[9:], "--update mobiletl:K")
    blocks = mobiletl_blocks(graph)
    if not blocks:
        raise TteError(f"--update {text}: no inverted-residual block (conv1x1 -> depthwise -> conv1x1) found",
                       hint="use last:N or sparse:FILE")
    if k > len(blocks):
        raise TteError(f"--update {text}: the model has only {len(blocks)} inverted-residual blocks",
                       hint=f"use mobiletl:1 ... mobiletl:{len(blocks)}")
    plan: dict[str, tuple[bool, tuple[int, ...]]] = {}
    for expand, dw, project in blocks[-k:]:
        plan[expand.name] = (True, ())
        plan[dw.name] = (True, ())
        plan[project.name] = (True, _all(project, graph))
    return plan


def scheme_spec(scheme: Mapping[str, Any], graph: Graph, text: str = "sparse", where: str = "scheme") -> UpdateSpec:
    """An UpdateSpec from a loaded scheme dict (`bias`, `weights`, `classifier`)."""
    if not isinstance(scheme, Mapping) or not (_SCHEME_KEYS & set(scheme)):
        raise TteError(f"{where}: not an update scheme", hint='expected {"bias": [...], "weights": {...}}')
    by_name = {n.name: n for n in graph.nodes}
    plan: dict[str, tuple[bool, tuple[int, ...]]] = {}
    for name in scheme.get("bias") or []:
        node = _weight_node(str(name), by_name, graph, where)
        plan[node.name] = (True, plan.get(node.name, (False, ()))[1])
    for name, sel in (scheme.get("weights") or {}).items():
        node = _weight_node(str(name), by_name, graph, where)
        plan[node.name] = (plan.get(node.name, (False, ()))[0], _channels(node, graph, sel, where))
    classifier = scheme.get("classifier")
    if classifier not in (None, "none", "full", "bias"):
        raise TteError(f"{where}: classifier must be \"full\", \"bias\" or \"none\", not {classifier!r}")
    if classifier in ("full", "bias"):
        head = weight_layers(graph)[-1]
        plan[head.name] = (True, _all(head, graph) if classifier == "full" else plan.get(head.name, (0, ()))[1])
    return _finish(text, plan, graph)


def _finish(text: str, plan: dict[str, tuple[bool, tuple[int, ...]]], graph: Graph) -> UpdateSpec:
    layers = weight_layers(graph)
    fresh = [n for n in layers if n.attrs.get("fresh")]
    for n in fresh:  # a new head starts at zero: it must learn
        plan[n.name] = (True, _all(n, graph))
    out = []
    for n in layers:
        bias, channels = plan.get(n.name, (False, ()))
        if bias or channels:
            out.append(LayerUpdate(n.name, n.op, bool(bias), tuple(channels), in_channels(n, graph)))
    return UpdateSpec(text, tuple(out))


def _all(node: Node, graph: Graph) -> tuple[int, ...]:
    return tuple(range(in_channels(node, graph)))


def _weight_node(name: str, by_name: Mapping[str, Node], graph: Graph, where: str) -> Node:
    node = by_name.get(name)
    if node is None:
        candidates = [n.name for n in weight_layers(graph)]
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
            f"weight layers are {', '.join(candidates[:6])}{', ...' if len(candidates) > 6 else ''}"
        raise TteError(f"{where}: no layer named '{name}' in the model", hint=hint)
    if node.op not in WEIGHT_OPS:
        raise TteError("has no weights to train", node=name, op=node.op,
                       hint="name conv, depthwise or fully connected layers in the update spec")
    return node


def _channels(node: Node, graph: Graph, sel: Any, where: str) -> tuple[int, ...]:
    n = in_channels(node, graph)
    if isinstance(sel, bool):
        raise TteError(f"{where}: bad weight selection {sel!r}", node=node.name, op=node.op,
                       hint="give a ratio in (0, 1] or a list of input channels")
    if isinstance(sel, (int, float)):
        ratio = float(sel)
        if not 0.0 < ratio <= 1.0:
            raise TteError(f"{where}: weight ratio {sel} is outside (0, 1]", node=node.name, op=node.op,
                           hint="give the fraction of input channels to train, e.g. 0.25")
        return top_channels(node, graph, ratio)
    if isinstance(sel, Sequence) and not isinstance(sel, str) and sel:
        try:
            chans = sorted({int(c) for c in sel})
        except (TypeError, ValueError):
            chans = [-1]
        if chans[0] < 0 or chans[-1] >= n:
            raise TteError(f"{where}: channel list {list(sel)} is not within 0..{n - 1}", node=node.name,
                           op=node.op, hint=f"the layer has {n} input channels")
        return tuple(chans)
    raise TteError(f"{where}: bad weight selection {sel!r}", node=node.name, op=node.op,
                   hint="give a ratio in (0, 1] or a non-empty list of input channels")


def _positive_int(text: str, what: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k <= 0:
        raise TteError(f"{what}: '{text}' is not a positive integer")
    return k


# --- scheme files -----------------------------------------------------------------------------------------------


def load_scheme(ref: str) -> tuple[Mapping[str, Any], str]:
    """Read `FILE[#ENTRY]` (JSON or YAML) and return (scheme, description).

    A file holding one scheme is used as is. A file holding several (`{model: {scheme: {...}}}`, like
    paper_schemes.json, or `{scheme: {...}}`) needs `#model/scheme` (or `#scheme`) unless it holds only one;
    without it the error lists the entries.
    """
    path_text, _, entry = ref.partition("#")
    path = Path(path_text)
    if not path.is_file():
        raise TteError(f"--update sparse: scheme file '{path}' not found", hint="give a JSON or YAML file")
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TteError(f"--update sparse: cannot read '{path}': {first}") from None
    entries = _entries(data)
    if isinstance(data, Mapping) and _SCHEME_KEYS & set(data):
        if entry:
            raise TteError(f"--update sparse: '{path}' holds a single scheme; drop '#{entry}'")
        return data, str(path)
    if not entries:
        raise TteError(f"--update sparse: '{path}' holds no update scheme",
                       hint='expected {"bias": [...], "weights": {...}, "classifier": "full"}')
    if not entry and len(entries) == 1:
        (entry,) = entries
    if not entry:
        raise TteError(f"--update sparse: '{path}' holds {len(entries)} schemes; choose one with FILE#ENTRY",
                       hint="entries: " + ", ".join(entries))
    if entry not in entries:
        close = difflib.get_close_matches(entry, list(entries), n=3, cutoff=0.4)
        raise TteError(f"--update sparse: no entry '{entry}' in '{path}'",
                       hint="entries: " + ", ".join(close or list(entries)))
    return entries[entry], f"{path}#{entry}"


def _entries(data: Any) -> dict[str, Mapping[str, Any]]:
    """Scheme dicts found one or two levels down, keyed 'scheme' or 'model/scheme'."""
    out: dict[str, Mapping[str, Any]] = {}
    if not isinstance(data, Mapping):
        return out
    for k, v in data.items():
        if not isinstance(v, Mapping):
            continue
        if _SCHEME_KEYS & set(v):
            out[str(k)] = v
            continue
        for k2, v2 in v.items():
            if isinstance(v2, Mapping) and _SCHEME_KEYS & set(v2):
                out[f"{k}/{k2}"] = v2
    return out
