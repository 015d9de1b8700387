"""The planner's shortcuts for the scheme search change no result: the stage choice from floors equals the
choice from planning every option, and warm caches give the plans of a cold start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_stripes import residual_net

import codegen.train_layout as train_layout
import tte
import tte.passes.memory_plan as memory_plan
from tte.compile import TrainConfig, load, train_program
from tte.passes import stripe_schedule, stripes
from tte.passes.normalize import normalize

SHARED = Path(tte.__file__).resolve().parents[1].parent / "shared" / "models"


def _summary(layout) -> tuple:
    p = layout.planned
    stages = [n for n in p.tg.graph.nodes if n.op == stripes.STAGE_OP]  # none, one, or a few in a row
    return (tuple(n.name for n in stages), tuple(stripes.stripe_mode(n) for n in stages), p.arena,
            tuple(sorted(p.plan.offsets.items())), tuple(sorted(p.infer_plan.offsets.items())), p.plan.nested)


def _every_option(monkeypatch) -> None:
    original = stripes.pick_stage
    monkeypatch.setattr(train_layout, "pick_stage",
                        lambda graph, trainable, plan, budget, floor=None: original(graph, trainable, plan, budget))


def _clear_caches() -> None:
    memory_plan._MEMO.clear()
    memory_plan._PREPARED.clear()
    stripes._OPTIONS.clear()
    stripes._OFFSETS.clear()
    stripe_schedule._LINES.clear()


@pytest.mark.parametrize("rolling", [True, False])
@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("update", ["last:1", "last:3"])
def test_floors_choose_the_stage_planning_every_option_would(update, stages, rolling, monkeypatch):
    monkeypatch.setattr(stripes, "MAX_STAGES", stages)
    if not rolling:  # recomputing stripes only: their heights trade memory for MACs, so the choice varies more
        monkeypatch.setattr(stripes, "ROLLING_ROWS", ())
    _clear_caches()
    program = train_program(normalize(residual_net()), TrainConfig(update, "new:3"))
    budgets = [100, 5000, 5500, 7000, 10000]  # bytes for the whole train step (no stack reserve)
    fast = [_summary(train_layout.plan_layout(program, "m", b)) for b in budgets]
    _every_option(monkeypatch)
    assert [_summary(train_layout.plan_layout(program, "m", b)) for b in budgets] == fast
    # stripe heights differ with the budget (two stages: one choice is far below the rest); the largest needs none
    assert len({s[:2] for s in fast}) >= (3 if stages == 1 and not rolling else 2)
    _clear_caches()


def test_warm_caches_give_the_cold_plans():
    program = train_program(normalize(residual_net()), TrainConfig("last:1", "new:3"))
    _clear_caches()
    cold = [_summary(train_layout.plan_layout(program, "m", b)) for b in (100, 4000)]
    assert memory_plan._MEMO and stripes._OPTIONS and stripes._OFFSETS
    assert [_summary(train_layout.plan_layout(program, "m", b)) for b in (100, 4000)] == cold


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/models is absent")
def test_paper_model_stage_choice_and_caches(monkeypatch):
    """proxyless-w0.3 with its 98kb scheme under the smallest arena: three rolling stages, to blocks.0's
    projection, through blocks.1's and through blocks.3's, each output nested in its input; the same plan with
    floors or not, warm or cold."""
    scheme = json.loads((SHARED / "paper_schemes.json").read_text())["proxyless-w0.3"]["98kb"]
    program = train_program(normalize(load(SHARED / "proxyless-w0.3-int8.onnx")),
                            TrainConfig("sparse", "new:10", scheme=scheme))
    _clear_caches()
    fast = _summary(train_layout.plan_layout(program, "m", 100 * 1024))
    assert fast[0] == ("stage[first_conv .. blocks.0.pointwise2]", "stage[blocks.1.pointwise1 .. blocks.1.pointwise2]",
                       "stage[blocks.2.pointwise1 .. blocks.3.pointwise2]")
    assert fast[1] == ((1, True),) * 3 and len(fast[5]) == 3  # every stage output nested in its input
    assert _summary(train_layout.plan_layout(program, "m", 100 * 1024)) == fast
    _clear_caches()
    _every_option(monkeypatch)
    assert _summary(train_layout.plan_layout(program, "m", 100 * 1024)) == fast


def _staged_floors(program) -> list[tuple[int, int]]:
    """For every one- and two-stage candidate of a train step: (the stage choice's floor, train_floor of the staged
    train step)."""
    from codegen.emit import ARENA_ALIGNMENT
    from codegen.ops.train_split import split_trained_weights
    from tte.passes.train_plan import train_floor

    tg = split_trained_weights(program)
    home = train_layout.state_homes(tg.graph, tg.state_names)
    floor = train_layout.after_stages(tg, home)
    out = []
    for cand in stripes.stage_choices(tg.graph, set(home), 2):
        g = tg.graph
        for o in cand:
            g = stripes.with_stage(g, o.node, o.scratch)
        later = ((o.node, o.scratch) for o in cand[1:])
        fast = max(max(o.floor for o in cand), floor(cand[0].node, cand[0].scratch, *later))
        fast = -(-fast // ARENA_ALIGNMENT) * ARENA_ALIGNMENT
        out.append((fast, train_floor(g, {*train_layout.TRAIN_EXTERNAL, *home}, ARENA_ALIGNMENT)))
    return out


@pytest.mark.parametrize("update", ["last:1", "last:3"])
def test_stage_floor_from_the_unstaged_step_is_train_floor(update):
    pairs = _staged_floors(train_program(normalize(residual_net()), TrainConfig(update, "new:3")))
    assert len(pairs) >= 4 and all(fast == slow for fast, slow in pairs)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/models is absent")
@pytest.mark.parametrize("model, scheme", [("mbv2-w0.35", "99kb"), ("mcunet-5fps", "49kb"),
                                           ("proxyless-w0.3", "98kb")])
def test_stage_floor_on_paper_models(model, scheme):
    spec = json.loads((SHARED / "paper_schemes.json").read_text())[model][scheme]
    program = train_program(normalize(load(SHARED / f"{model}-int8.onnx")),
                            TrainConfig("sparse", "new:10", scheme=spec))
    pairs = _staged_floors(program)
    assert len(pairs) >= 10 and all(fast == slow for fast, slow in pairs), [p for p in pairs if p[0] != p[1]][:3]
