"""QAS on a small transfer task: int8 training with QAS tracks fp32 training; without QAS it does not learn.

A small CNN (conv3x3 -> conv3x3/2 -> conv1x1 -> mean -> fc) is pretrained in float with PyTorch on half of
scikit-learn's 8x8 digits, then quantized post-training (per-channel int8 weights, int8 activations, ReLU6 as
the [0, 6] int8 range). On the device it learns new data: the other half of the digits under a new label
mapping (y -> (y + 3) mod 10), training the last conv and the classifier (`last:2`) with batch-1 SGD, the
learning rate decaying linearly to 0. The same trainable set is trained in float32 PyTorch from the same
dequantized weights, on the same sample order. Accuracies are averaged over two sample orders.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from train_helpers import NetBuilder, quantize

from tte.ir import Graph
from tte.train import Trainer, TrainOptions

LR, EPOCHS, ORDERS, C3 = 0.1, 3, (1, 2), 64


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, 1, 1), nn.Conv2d(8, 16, 3, 2, 1)
        self.c3, self.fc = nn.Conv2d(16, C3, 1), nn.Linear(C3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.c3(F.relu6(self.c2(F.relu6(self.c1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def _data() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    half = len(y) // 2
    new_x, new_y = x[half:], (y[half:] + 3) % 10
    n_train = len(new_y) * 2 // 3
    return {"pre_x": x[:half], "pre_y": y[:half], "train_x": new_x[:n_train], "train_y": new_y[:n_train],
            "test_x": new_x[n_train:], "test_y": new_y[n_train:]}


def _pretrain(data: dict[str, np.ndarray]) -> Net:
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 0.01)
    x, y = torch.from_numpy(data["pre_x"][:, None]), torch.from_numpy(data["pre_y"])
    for _ in range(40):
        for i in range(0, len(y), 32):
            opt.zero_grad()
            F.cross_entropy(net(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    return net


def _quantize(net: Net, calib: np.ndarray) -> Graph:
    def conv(m: nn.Conv2d) -> dict:
        return {"w": m.weight.detach().double().numpy().transpose(0, 2, 3, 1), "b": m.bias.detach().double().numpy()}

    nb = NetBuilder("digits", calib[..., None].astype(np.float64))
    nb.conv(8, 3, 1, act="relu6", name="c1", **conv(net.c1))
    nb.conv(16, 3, 2, act="relu6", name="c2", **conv(net.c2))
    nb.conv(C3, 1, 1, act="relu6", name="c3", **conv(net.c3))
    nb.mean(keepdims=False, name="gap")
    nb.fc(10, name="fc", w=net.fc.weight.detach().double().numpy(), b=net.fc.bias.detach().double().numpy())
    return nb.graph()


def _schedule(n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(np.tile(np.arange(n_train), EPOCHS))
    return order, (LR * (1 - np.arange(len(order)) / len(order))).astype(np.float32)


def _int8_accuracy(graph: Graph, options: TrainOptions, data: dict, seed: int) -> float:
    q = graph[graph.inputs[0].tensor].quant
    xs = [quantize(x[None, :, :, None], q) for x in data["train_x"]]
    tr = Trainer(graph, "last:2", options)
    order, lrs = _schedule(len(xs), seed)
    for i, lr in zip(order, lrs, strict=True):
        tr.train_step(xs[i], int(data["train_y"][i]), float(lr))
    return tr.accuracy([quantize(x[None, :, :, None], q) for x in data["test_x"]], data["test_y"])


def _fp32_accuracy(graph: Graph, data: dict, seed: int) -> float:
    """The same model in float32, starting from the dequantized int8 parameters; c3 and fc trained by SGD."""
    net = Net()
    with torch.no_grad():
        for name in ("c1", "c2", "c3", "fc"):
            mod, w, b = getattr(net, name), graph[f"{name}:w"], graph[f"{name}:b"]
            real = w.data.astype(np.float64) * w.quant.scale.reshape((-1,) + (1,) * (w.data.ndim - 1))
            mod.weight.copy_(torch.from_numpy(real.transpose(0, 3, 1, 2) if real.ndim == 4 else real))
            mod.bias.copy_(torch.from_numpy(b.data * b.quant.scale.astype(np.float64)))
    params = [*net.c3.parameters(), *net.fc.parameters()]
    sgd = torch.optim.SGD(params, LR)
    order, lrs = _schedule(len(data["train_y"]), seed)
    x, y = torch.from_numpy(data["train_x"][:, None]), torch.from_numpy(data["train_y"])
    for i, lr in zip(order, lrs, strict=True):
        sgd.param_groups[0]["lr"] = float(lr)
        sgd.zero_grad()
        F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()
        sgd.step()
    with torch.no_grad():
        pred = net(torch.from_numpy(data["test_x"][:, None])).argmax(1).numpy()
    return float((pred == data["test_y"]).mean())


def test_qas_tracks_fp32_and_training_without_qas_does_not_learn():
    # One test (not two sharing a fixture): under pytest-xdist a shared fixture would run on both workers.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and quick for these tiny models
    try:
        data = _data()
        graph = _quantize(_pretrain(data), data["pre_x"][:400])
        q = graph[graph.inputs[0].tensor].quant
        res = {
            "before": Trainer(graph, "last:2").accuracy([quantize(x[None, :, :, None], q) for x in data["test_x"]],
                                                        data["test_y"]),
            "qas": float(np.mean([_int8_accuracy(graph, TrainOptions(), data, s) for s in ORDERS])),
            "fp32": float(np.mean([_fp32_accuracy(graph, data, s) for s in ORDERS])),
            "no_qas": _int8_accuracy(graph, TrainOptions(qas=False), data, ORDERS[0]),
        }
    finally:
        torch.set_num_threads(threads)
    print(f"transfer accuracy: {res}")
    assert res["before"] < 0.2, res  # the new mapping is really new
    assert res["qas"] > 0.8, res
    assert abs(res["qas"] - res["fp32"]) <= 0.02, res
    assert res["qas"] - res["no_qas"] >= 0.3, res
