"""The update spec (`--update`) and `--head`: every form, the paper's schemes, and the user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from train_helpers import NetBuilder, mobilenet_like

import tte
from tte.errors import TteError
from tte.train import TrainOptions, build_training_graph, parse_head, parse_update
from tte.train.spec import HeadSpec, channel_importance, mobiletl_blocks

MODELS = Path(tte.__file__).resolve().parents[1].parent / "shared" / "models"
PAPER_MODELS = ("mbv2-w0.35", "proxyless-w0.3", "mcunet-5fps")


@pytest.fixture(scope="module")
def net():
    return mobilenet_like()


def _summary(spec):
    return {lu.node: (lu.bias, len(lu.channels)) for lu in spec.layers}


def test_bias_only_full_and_last(net):
    names = ["first_conv", "blocks.0.pointwise1", "blocks.0.depthwise", "blocks.0.pointwise2",
             "blocks.1.pointwise1", "blocks.1.depthwise", "blocks.1.pointwise2", "classifier"]
    assert _summary(parse_update("bias-only", net)) == {n: (True, 0) for n in names}
    full = parse_update("full", net)
    assert [lu.node for lu in full.layers] == names
    assert all(lu.bias and lu.full_weight for lu in full.layers)
    assert full.layer("blocks.1.depthwise").in_channels == 24
    assert _summary(parse_update("last:2", net)) == {"blocks.1.pointwise2": (True, 24), "classifier": (True, 8)}


def test_mobiletl_finds_blocks_structurally(net):
    assert [tuple(n.name for n in b) for b in mobiletl_blocks(net)] == [
        ("blocks.0.pointwise1", "blocks.0.depthwise", "blocks.0.pointwise2"),
        ("blocks.1.pointwise1", "blocks.1.depthwise", "blocks.1.pointwise2")]
    assert _summary(parse_update("mobiletl:1", net)) == {
        "blocks.1.pointwise1": (True, 0), "blocks.1.depthwise": (True, 0), "blocks.1.pointwise2": (True, 24)}
    assert len(parse_update("mobiletl:2", net).layers) == 6


def test_sparse_json_ratio_list_and_classifier(net, tmp_path):
    scheme = {"bias": ["blocks.1.depthwise", "blocks.1.pointwise2"],
              "weights": {"blocks.1.pointwise1": 0.25, "blocks.1.depthwise": [3, 1], "blocks.1.pointwise2": 1},
              "classifier": "full"}
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps(scheme))
    spec = parse_update(f"sparse:{path}", net)
    assert _summary(spec) == {"blocks.1.pointwise1": (False, 2), "blocks.1.depthwise": (True, 2),
                              "blocks.1.pointwise2": (True, 24), "classifier": (True, 8)}
    assert spec.layer("blocks.1.depthwise").channels == (1, 3)
    # the ratio picks the input channels of largest magnitude
    imp = channel_importance(net.node("blocks.1.pointwise1"), net)
    assert spec.layer("blocks.1.pointwise1").channels == tuple(sorted(np.argsort(-imp, kind="stable")[:2]))
    ypath = tmp_path / "scheme.yaml"
    ypath.write_text(yaml.safe_dump(scheme))
    assert parse_update(f"sparse:{ypath}", net).layers == spec.layers


def test_multi_entry_file_needs_an_entry(net, tmp_path):
    path = tmp_path / "schemes.json"
    path.write_text(json.dumps({"_about": "x", "tiny": {"num_convs": 3, "small": {"bias": ["classifier"]},
                                                         "large": {"bias": ["classifier"], "classifier": "full"}}}))
    assert _summary(parse_update(f"sparse:{path}#tiny/large", net)) == {"classifier": (True, 8)}
    with pytest.raises(TteError, match="tiny/small, tiny/large"):
        parse_update(f"sparse:{path}", net)
    with pytest.raises(TteError, match="no entry 'tiny/larg'.*tiny/large"):
        parse_update(f"sparse:{path}#tiny/larg", net)


@pytest.mark.parametrize("scheme, message", [
    ({"bias": ["blocks.1.pointwse1"]}, "no layer named 'blocks.1.pointwse1'.*did you mean 'blocks.1.pointwise1'"),
    ({"weights": {"blocks.1.pointwise1": 0}}, r"ratio 0 is outside \(0, 1\]"),
    ({"weights": {"blocks.1.pointwise1": 1.5}}, r"ratio 1.5 is outside \(0, 1\]"),
    ({"bias": ["blocks.1.residual"]}, r"node 'blocks.1.residual' \(add\): has no weights"),
    ({"weights": {"classifier": [0, 8]}}, r"channel list \[0, 8\] is not within 0..7"),
    ({"weights": {"classifier": "all"}}, "bad weight selection 'all'"),
    ({"classifier": "half"}, "classifier must be"),
    ({"something": 1}, "holds no update scheme"),
])
def test_scheme_errors(net, tmp_path, scheme, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(scheme))
    with pytest.raises(TteError, match=message) as err:
        parse_update(f"sparse:{path}", net)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("last:0", "not a positive integer"), ("last:9", "only 8 weight layers"), ("mobiletl:3", "only 2 inverted"),
    ("everything", "unknown --update"), ("sparse:/nonexistent.json", "not found"),
])
def test_spec_text_errors(net, text, message):
    with pytest.raises(TteError, match=message):
        parse_update(text, net)


def test_unreadable_file_and_no_blocks(net, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(TteError, match="cannot read"):
        parse_update(f"sparse:{path}", net)
    nb = NetBuilder("plain", np.random.default_rng(0).uniform(-1, 1, (4, 6, 6, 2)))
    nb.conv(4, 3, 2, name="c")
    nb.reshape((1, 36), name="flat")
    nb.fc(3, name="fc")
    with pytest.raises(TteError, match="no inverted-residual block"):
        parse_update("mobiletl:1", nb.graph())


def test_head_forms_and_errors():
    assert parse_head("keep") == HeadSpec("keep")
    assert parse_head("fp32") == HeadSpec("fp32")
    assert parse_head("new:12") == HeadSpec("new", 12)
    for bad in ("new:0", "new:x", "float"):
        with pytest.raises(TteError):
            parse_head(bad)


def test_new_head_is_always_trained(net):
    from tte.train import apply_head

    g = apply_head(net, "new:3")
    spec = parse_update("bias-only", g)
    assert spec.layer("classifier").full_weight and spec.layer("classifier").bias
    assert g[g.outputs[0].tensor].shape == (1, 3)


# --- the paper's schemes on the paper's models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper():
    path = MODELS / "paper_schemes.json"
    if not path.is_file():
        pytest.skip("shared models absent")
    from tte.frontend import load

    schemes = json.loads(path.read_text())
    return path, schemes, {m: load(MODELS / f"{m}-int8.onnx") for m in PAPER_MODELS}


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_schemes_parse_as_they_are(paper, model):
    path, schemes, graphs = paper
    graph = graphs[model]
    entries = {k: v for k, v in schemes[model].items() if isinstance(v, dict)}
    assert len(entries) == 5
    for name, scheme in entries.items():
        spec = parse_update(f"sparse:{path}#{model}/{name}", graph)
        layers = {lu.node: lu for lu in spec.layers}
        assert set(layers) == set(scheme["bias"]) | set(scheme["weights"]) | {"classifier"}
        for node, ratio in scheme["weights"].items():
            lu = layers[node]
            assert len(lu.channels) == max(1, int(np.floor(ratio * lu.in_channels + 0.5))), (name, node)
        assert layers["classifier"].full_weight and layers["classifier"].bias
        assert all(layers[n].bias for n in scheme["bias"])


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_scheme_builds_a_pruned_train_step(paper, model):
    path, schemes, graphs = paper
    graph = graphs[model]
    scheme = "99kb" if "99kb" in schemes[model] else "98kb"
    tg = build_training_graph(graph, parse_update(f"sparse:{path}#{model}/{scheme}", graph), TrainOptions())
    order = [n.name for n in graph.nodes]
    lowest = min(order.index(lu.node) for lu in tg.spec.layers)
    touched = {n.name.split("/")[0] for n in tg.backward_nodes()} - {"tte:loss"}
    assert min(order.index(t) for t in touched if t in order) >= lowest
    assert not any(n.name == f"{order[lowest]}/input_grad" for n in tg.backward_nodes())
