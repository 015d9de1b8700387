"""What each candidate item is worth to the search: measured gains combined with a prior, so noise cannot empty it.

The prior `p_i` is the data-free heuristic (`prior`): later layers help more than earlier ones, a bias is cheap
and useful, weights help with the square root of the trained fraction, depthwise weights least. Without data the
search uses it alone. With the contribution analysis' measured gains `m_i` (the drop of the validation loss
from the classifier alone, on the items that had a run), `combine` makes every item's value:

    a      = the prior's scale, least squares of m on p over the measured items (at least SIGMA / max p)
    r_i    = m_i - a p_i                  what the measurement says beyond the prior
    sigma  = 1.4826 * median |r - median r|   the spread of that (noise and misfit, robust to outliers)
    g_i    = a p_i + SHRINK * r_i         measured items: halfway between prior and measurement
    g_i    = a p_i + SHRINK * mean r_j    other items: the residual of the same layer's measured items (j) of
                                          the same kind; weights of a layer whose weights had no run: 0
    g_i    = max(g_i, FLOOR * a p_i)      unless m_i < -HARMFUL * sigma: only a clearly harmful measurement
                                          makes an item worthless (g_i = m_i < 0, the search drops it)

So ties and noise leave the prior's ranking (deeper costs more, later helps more) and the budget is used; a
measurement that stands out of the noise moves an item up or down. Weights are trained only in layers whose
weights had a run: on mbv2-w0.35, schemes that also trained the untried weights of deeper blocks at full ratio
diverged for one of two sample orders (59% vs 90% accuracy), where biases filled in from the prior did not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tte.auto.cost import CostModel, Item

SHRINK = 0.5
FLOOR = 0.1
HARMFUL = 2.0


def prior(cm: CostModel, items: Iterable[Item]) -> dict[Item, float]:
    """The data-free value of each item: p^2 * (1 for a bias; 2 sqrt(ratio), halved for depthwise, for weights),
    p = the layer's position from 0 (input) to 1 (classifier)."""
    n = max(1, len(cm.layers))
    pos = {node.name: (k + 1) / n for k, node in enumerate(cm.layers)}
    out = {}
    for i in items:
        p2 = pos[i.node] ** 2
        if i.kind == "bias":
            out[i] = p2
        else:
            dw = cm.node(i.node).op == "depthwise_conv2d"
            out[i] = p2 * 2.0 * float(np.sqrt(i.ratio)) * (0.5 if dw else 1.0)
    return out


def combine(priors: Mapping[Item, float], measured: Mapping[Item, float]) -> dict[Item, float]:
    """Every prior item's value from its prior and the measured gains (module docstring)."""
    meas = [i for i in measured if i in priors]
    if not meas:
        return dict(priors)
    p = np.array([priors[i] for i in meas])
    m = np.array([measured[i] for i in meas])
    pmax = max(priors.values())
    fit = float(p @ m / max(p @ p, 1e-30))
    resid = m - fit * p
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    a = max(fit, sigma / pmax, 1e-6 / pmax)
    r = {i: measured[i] - a * priors[i] for i in meas}
    by_layer: dict[tuple[str, str], list[float]] = {}
    for i in meas:
        by_layer.setdefault((i.node, i.kind), []).append(r[i])
    out = {}
    for i, pi in priors.items():
        if i in r and measured[i] < -HARMFUL * sigma:
            out[i] = measured[i]
            continue
        if i not in r and i.kind == "weight" and (i.node, i.kind) not in by_layer:
            out[i] = 0.0  # weights only where a run showed how they train (several untried ones can diverge)
            continue
        ri = r[i] if i in r else float(np.mean(by_layer.get((i.node, i.kind), [0.0])))
        out[i] = max(a * pi + SHRINK * ri, FLOOR * a * pi)
    return out
