"""Knowledge distillation as a model-level recovery step between pruning and quantization."""

from __future__ import annotations

import pytest
import torch

from squeezeray._errors import PlanError
from squeezeray.compress import CompressedLinear
from squeezeray.compress import apply_plan
from squeezeray.recovery import DistillConfig
from squeezeray.recovery import distill_loss
from squeezeray.recovery import parse_distill
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_preset
from squeezeray.spaces import parse_steps

# ------------------------------------------------------------------ the loss (pure, tiny tensors)


def test_loss_is_cross_entropy_alone_when_the_student_is_the_teacher() -> None:
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    loss, parts = distill_loss(logits, logits.clone(), labels, temperature=2.0, alpha=0.7)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-6)
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 11), labels.view(-1))
    assert float(loss) == pytest.approx(0.3 * float(ce), rel=1e-5)


def test_loss_kl_term_matches_the_definition_and_scales_with_t_squared() -> None:
    s, t = torch.randn(3, 7), torch.randn(3, 7)
    labels = torch.zeros(3, dtype=torch.long)
    temp = 3.0
    p_t = torch.softmax(t / temp, -1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / temp, -1))).sum(-1).mean()
    loss, parts = distill_loss(s, t, labels, temperature=temp, alpha=1.0)
    assert parts["kl"] == pytest.approx(float(kl), rel=1e-5)
    assert float(loss) == pytest.approx(temp**2 * float(kl), rel=1e-5)


def test_loss_gradient_pulls_the_student_towards_the_teacher() -> None:
    t = torch.randn(4, 9)
    s = torch.randn(4, 9, requires_grad=True)
    loss, _ = distill_loss(s, t, torch.zeros(4, dtype=torch.long), temperature=1.0, alpha=1.0)
    loss.backward()
    with torch.no_grad():
        moved = s - 0.5 * s.grad
        after, _ = distill_loss(moved, t, torch.zeros(4, dtype=torch.long), temperature=1.0, alpha=1.0)
    assert float(after) < float(loss.detach())


# ------------------------------------------------------------------ config, grammar, serialisation


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"steps": 0}, "kd.steps=0"), ({"lr": 2.0}, "kd.lr=2.0"), ({"temperature": -1.0}, "kd.temperature=-1.0"),
     ({"alpha": 1.5}, "kd.alpha=1.5"), ({"batch_seqs": 0}, "kd.batch_seqs=0"), ({"seed": -3}, "kd.seed=-3")],
)
def test_config_errors_name_the_field_and_value(kw: dict, field: str) -> None:
    with pytest.raises(PlanError, match=field.replace(".", r"\.")):
        DistillConfig(**kw)


def test_preset_grammar_round_trips_through_the_label() -> None:
    cfg = parse_distill("kd-n60-t4-lr0.0001-a0.5-b2")
    assert (cfg.steps, cfg.temperature, cfg.lr, cfg.alpha, cfg.batch_seqs) == (60, 4.0, 1e-4, 0.5, 2)
    assert parse_distill(cfg.label()) == cfg
    assert parse_distill("kd") == DistillConfig()


def test_plan_with_kd_round_trips_through_json() -> None:
    plan = CompressionPlan.uniform("wanda-2:4+kd-n10+gptq-w4g64", ["a.q_proj", "a.k_proj"])
    assert plan.distill == DistillConfig(steps=10)
    assert plan.layer_label("a.q_proj") == "wanda-2:4+kd-n10+gptq-w4g64"
    back = CompressionPlan.from_dict(plan.to_dict())
    assert back == plan
    assert CompressionPlan.from_dict(CompressionPlan.uniform("rtn-w8", ["x"]).to_dict()).distill is None


@pytest.mark.parametrize(
    ("preset", "why"),
    [("gptq-w4g64+kd+wanda-s50", "prune steps must come first"),
     ("wanda-s50+gptq-w4g64+kd", "right after the prune steps"),
     ("wanda-s50+kd+kd+rtn-w4", "at most one kd"),
     ("kd", "at least one technique step"),
     ("wanda-s50+kd-q4+rtn-w4", "cannot read 'q4'")],
)
def test_misplaced_or_malformed_kd_is_refused(preset: str, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        parse_preset(preset)


def test_layer_steps_parser_points_to_the_preset_parser_for_kd() -> None:
    with pytest.raises(PlanError, match="model-level"):
        parse_steps("wanda-s50+kd+rtn-w4")


def test_distill_json_with_unknown_setting_is_refused() -> None:
    data = CompressionPlan.uniform("wanda-s50+kd+rtn-w4", ["x"]).to_dict()
    data["distill"]["epochs"] = 3
    with pytest.raises(PlanError, match="epochs"):
        CompressionPlan.from_dict(data)


# ------------------------------------------------------------------ on a tiny Llama


def test_apply_plan_needs_the_teacher_for_kd(tiny) -> None:  # noqa: ANN001
    import copy

    plan = tiny.uniform("magnitude-s50+kd-n2+rtn-w4g64")
    with pytest.raises(PlanError, match="teacher"):
        apply_plan(copy.deepcopy(tiny.original), plan, tiny.stats(hessian=False))


def test_distillation_lowers_kl_keeps_the_mask_and_then_quantizes(tiny) -> None:  # noqa: ANN001
    pruned, _ = tiny.compress(tiny.uniform("magnitude-s50"))
    plan = tiny.uniform("magnitude-s50+kd-n6-lr0.001-a1+rtn-w4g64")
    recovered, reports = tiny.compress(plan)
    kl_pruned = tiny.evaluate(pruned, ["kl"])["kl"].value
    kl_recovered = tiny.evaluate(recovered, ["kl"])["kl"].value
    assert kl_recovered < kl_pruned  # 4-bit on top, and still closer to the original than pruning alone
    report = reports[0].distill
    assert report is not None and report.steps == 6 and report.last_kl < report.first_kl
    assert all(r.steps == "magnitude-s50+kd-n6-lr0.001-a1+rtn-w4g64" for r in reports)
    name = next(iter(tiny.layers))
    a, b = pruned.get_submodule(name), recovered.get_submodule(name)
    assert isinstance(b, CompressedLinear) and b.fmt.bits == 4
    # the magnitude mask was taken before training and survives it: pruned weights stay zero
    pruned_zero = a.effective_weight() == 0
    assert pruned_zero.float().mean() >= 0.5 and torch.all(b.effective_weight()[pruned_zero] == 0)
    # and the original model is untouched and frozen
    assert all(not p.requires_grad for p in tiny.original.parameters())
