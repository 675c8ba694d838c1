"""Loyalty and robustness: does the candidate still answer like the original?

Definitions (all on the multiple-choice items of one task subset; a choice's
score is its log-likelihood under the task's headline metric, ``acc`` sum or
``acc_norm`` per character, and P over the choices is the softmax of the scores):

- label loyalty: share of items where the candidate's top choice is the original's;
- probability loyalty: 1 - mean Jensen-Shannon divergence (bits, 0..1) between the
  original's and the candidate's P;
- robustness score, RS = mean over perturbations of (1 - |P - P_pert| / P), where P is
  the model's mean probability of the correct choice on the clean items and P_pert
  the same on items whose question text was perturbed (seeded typos, casing,
  whitespace). It is the candidate's own robustness; the original's RS and the
  ratio of the two (``rs_relative``, 100% for a model identical to the original)
  are in ``details``;
- logit agreement (governance): position-by-position comparison of next-token
  logits with the original on the held-out windows.

The original's side is computed once and kept in ``EvalContext.reference``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeezeray._device import model_device
from squeezeray._errors import SqueezerayError
from squeezeray.evaluation import ChoiceComparison
from squeezeray.evaluation import Metric
from squeezeray.evaluation import Perturbation
from squeezeray.evaluation import TaskHarness
from squeezeray.evaluation import TaskSpec
from squeezeray.evaluation import compare_choices
from squeezeray.evaluation import gold_index
from squeezeray.evaluation import gold_probability
from squeezeray.evaluation import perturb_doc
from squeezeray.evaluation import resolve_task
from squeezeray.evaluation import robustness_score
from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance
from squeezeray.objectives._base import materialized
from squeezeray.objectives.accuracy import TaskObjective
from squeezeray.objectives.accuracy import context_tokenizer
from squeezeray.objectives.accuracy import subset_key

Scores = list[np.ndarray]


class _ChoiceObjective(TaskObjective):
    """Settings, task and caches shared by the objectives that compare choice distributions.

    Args:
        perturb_fields: Document fields perturbed by :class:`Robustness`; default the task's.
        **kwargs: The multiple-choice task and its subset (``task``, ``limit``, ``seed`` (also of the
            perturbations), ``metric``, ``batch_size``, ``run_dir``, ``tokenizer``); see
            :class:`~squeezeray.objectives.accuracy.TaskObjective`.
    """

    def __init__(self, *, perturb_fields: Sequence[str] | None = None, **kwargs: Any) -> None:
        self._perturb_fields = perturb_fields  # read by _resolve, during the base's construction
        super().__init__(**kwargs)
        self._gold: tuple[int, ...] | None = None

    def _resolve(self, task: str, metric: Metric | str | None) -> TaskSpec:
        return resolve_task(task, metric=metric, perturb_fields=self._perturb_fields)

    def _check_task(self, harness: TaskHarness) -> None:
        if harness.task.OUTPUT_TYPE != "multiple_choice":
            raise SqueezerayError(
                f"objective {self.name!r}: task {self.spec.ref!r} is {harness.task.OUTPUT_TYPE}, not multiple_choice"
            )

    def gold(self) -> tuple[int, ...]:
        """Correct choice of each item of the subset."""
        if self._gold is None:
            h = self.harness()
            self._gold = tuple(gold_index(h.task, d) for d in h.docs())
        return self._gold

    def _scores(self, ctx: EvalContext, tok: object, variant: str, docs: Sequence[dict[str, Any]]) -> tuple[Scores, Scores]:
        """(original's, candidate's) choice scores on ``docs``; the original's are cached under ``variant``."""
        h = self.harness()
        key = f"choices:{subset_key(self.spec, h.doc_ids)}:{variant}"
        if key not in ctx.reference:
            ctx.reference[key] = h.score(ctx.original, tok, docs)
        reference: Scores = ctx.reference[key]
        if ctx.candidate is ctx.original:
            return reference, reference
        with materialized(ctx.candidate):
            return reference, h.score(ctx.candidate, tok, docs)

    def _where(self) -> str:
        return f"{self.harness().subset}, {self.spec.metric.value} choice scores vs the original"


class _CleanLoyalty(_ChoiceObjective):
    """A loyalty read off the comparison of clean (unperturbed) choice scores."""

    field: ClassVar[str]  # attribute of ChoiceComparison this objective reports

    def measure(self, ctx: EvalContext) -> Measurement:
        tok = context_tokenizer(ctx, self.tokenizer, self.name)
        ref, cand = self._scores(ctx, tok, "clean", self.harness().docs())
        c = compare_choices(ref, cand, self.gold())
        return Measurement(self.name, getattr(c, self.field), self.unit, Provenance.COMPUTED, self._where(), _details(c))


class LabelLoyalty(_CleanLoyalty):
    """Share of items where the candidate picks the original's top choice."""

    name = "label_loyalty"
    direction = Direction.MAXIMIZE
    unit = "fraction"
    field = "label_loyalty"


class ProbabilityLoyalty(_CleanLoyalty):
    """1 - mean Jensen-Shannon divergence (bits) between the original's and the candidate's choice distributions."""

    name = "probability_loyalty"
    direction = Direction.MAXIMIZE
    unit = "fraction"
    field = "probability_loyalty"


def _details(c: ChoiceComparison) -> dict[str, object]:
    return {
        "n": c.n,
        "label_loyalty": c.label_loyalty,
        "label_loyalty_stderr": c.label_loyalty_stderr,
        "probability_loyalty": c.probability_loyalty,
        "js_mean_bits": c.js_mean,
        "js_max_bits": c.js_max,
        "acc_original": c.acc_reference,
        "acc_candidate": c.acc_candidate,
    }


class Robustness(_ChoiceObjective):
    """Robustness score RS (%) of the candidate to seeded perturbations of the question text.

    Args:
        perturbations: Which perturbations (``typo``, ``casing``, ``whitespace``); RS
            averages over them.
        rate: Share of eligible words (or gaps) each perturbation edits, at least one
            edit per field when ``rate`` > 0; 0 makes every perturbation the identity.
        **kwargs: See :class:`_ChoiceObjective`.
    """

    name = "robustness"
    direction = Direction.MAXIMIZE
    unit = "%"

    def __init__(
        self,
        *,
        perturbations: Sequence[Perturbation | str] = tuple(Perturbation),
        rate: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        try:
            self.perturbations = tuple(Perturbation(p) for p in perturbations)
        except ValueError:
            raise SqueezerayError(
                f"perturbations={list(perturbations)!r}: choose from {', '.join(p.value for p in Perturbation)}"
            ) from None
        if not self.perturbations or len(set(self.perturbations)) != len(self.perturbations):
            raise SqueezerayError(f"perturbations={list(perturbations)!r}: need at least one, each once")
        if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise SqueezerayError(f"rate={rate!r}: must be in [0, 1]")
        if not self.spec.perturb_fields:
            raise SqueezerayError(f"task {self.spec.ref!r} has no perturb fields: pass perturb_fields=[...]")
        self.rate = float(rate)

    def measure(self, ctx: EvalContext) -> Measurement:
        tok = context_tokenizer(ctx, self.tokenizer, self.name)
        h, gold = self.harness(), self.gold()
        clean = h.docs()
        fields = self.spec.perturb_fields
        ref_p: dict[str, float] = {}
        cand_p: dict[str, float] = {}
        changed: dict[str, float] = {}
        clean_scores = self._scores(ctx, tok, "clean", clean)
        ref_p["clean"], cand_p["clean"] = gold_probability(clean_scores[0], gold), gold_probability(clean_scores[1], gold)
        loyalty = compare_choices(*clean_scores, gold)
        for kind in self.perturbations:
            docs = [
                perturb_doc(d, fields, kind, rate=self.rate, seed=self.seed, doc_id=i)
                for i, d in zip(h.doc_ids, clean, strict=True)
            ]
            changed[kind.value] = float(np.mean([p != d for p, d in zip(docs, clean, strict=True)]))
            if changed[kind.value] > 0:  # unchanged documents score as the clean ones (rate 0)
                variant = f"{kind.value}:rate={self.rate}:seed={self.seed}:fields={','.join(fields)}"
                ref, cand = self._scores(ctx, tok, variant, docs)
            else:
                ref, cand = clean_scores
            ref_p[kind.value], cand_p[kind.value] = gold_probability(ref, gold), gold_probability(cand, gold)
        kinds = [k.value for k in self.perturbations]
        rs = 100.0 * robustness_score(cand_p["clean"], [cand_p[k] for k in kinds])
        rs_original = 100.0 * robustness_score(ref_p["clean"], [ref_p[k] for k in kinds])
        details: dict[str, object] = {
            "n": len(gold),
            "rs_original": rs_original,
            "rs_relative": 100.0 * (rs / rs_original) if rs_original else float("nan"),
            **{f"p_{k}": v for k, v in cand_p.items()},
            **{f"original_p_{k}": v for k, v in ref_p.items()},
            **{f"items_changed_{k}": v for k, v in changed.items()},
            "label_loyalty_clean": loyalty.label_loyalty,
            "rate": self.rate,
            "perturb_fields": list(fields),
        }
        where = f"{h.subset}, P(correct) clean vs {'/'.join(kinds)} at rate {self.rate} (seed {self.seed})"
        return Measurement(self.name, rs, self.unit, Provenance.COMPUTED, where, details)


# --------------------------------------------------------------------------- logit agreement


@torch.no_grad()
def reference_topk(model: nn.Module, windows: torch.Tensor, *, k: int, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's top-``k`` next tokens and their log-probabilities at every position.

    Args:
        model: Causal LM.
        windows: (n, T) int64 token ids.
        k: How many tokens per position.
        batch_size: Windows per forward pass.

    Returns:
        (ids, logp): (n, T, k) int64 and (n, T, k) float32, best first.
    """
    ids, logp = [], []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(model_device(model))
        lp = F.log_softmax(model(input_ids=batch, use_cache=False).logits.float(), -1)
        top = lp.topk(k, dim=-1)  # (B, T, k)
        ids.append(top.indices.cpu())  # the reference is kept on the host
        logp.append(top.values.cpu())
    return torch.cat(ids), torch.cat(logp)


@torch.no_grad()
def logit_agreement(
    reference: tuple[torch.Tensor, torch.Tensor], model: nn.Module, windows: torch.Tensor, *, batch_size: int = 2
) -> dict[str, float]:
    """Compare ``model``'s next-token predictions with a reference's top-k, position by position.

    Args:
        reference: (ids, logp) from :func:`reference_topk` on the same windows.
        model: Causal LM.
        windows: (n, T) int64 token ids.
        batch_size: Windows per forward pass.

    Returns:
        ``top1_agreement`` (share of positions with the same argmax), ``topk_overlap``
        (mean share of the reference's top-k also in the model's top-k),
        ``topk_logprob_mae`` / ``topk_logprob_max_abs`` (|log p| differences on the
        reference's top-k tokens, nats), ``windows_identical`` (share of windows whose
        whole greedy sequence agrees) and ``first_divergence`` (mean relative position
        of the first disagreement, 1.0 when none).
    """
    ref_ids, ref_lp = reference
    k = ref_ids.shape[-1]
    agree, overlap, diffs, firsts = [], [], [], []
    max_abs = 0.0
    for start in range(0, windows.shape[0], batch_size):
        device = model_device(model)
        lp = F.log_softmax(model(input_ids=windows[start : start + batch_size].to(device), use_cache=False).logits.float(), -1)
        r_ids = ref_ids[start : start + batch_size].to(device)  # (B, T, k)
        r_lp = ref_lp[start : start + batch_size].to(device)
        top = lp.topk(k, dim=-1).indices  # (B, T, k)
        same = top[..., 0] == r_ids[..., 0]  # (B, T)
        agree.append(same)
        overlap.append((top.unsqueeze(-1) == r_ids.unsqueeze(-2)).any(-1).float().mean(-1))  # (B, T)
        d = (lp.gather(-1, r_ids) - r_lp).abs()  # (B, T, k)
        diffs.append(d.mean(-1))
        max_abs = max(max_abs, float(d.max()))
        T = same.shape[1]
        for row in same:
            bad = (~row).nonzero()
            firsts.append(float(bad[0, 0]) / T if bad.numel() else 1.0)
    agree_t = torch.cat(agree)
    return {
        "top1_agreement": float(agree_t.float().mean()),
        "topk_overlap": float(torch.cat(overlap).mean()),
        "topk_logprob_mae": float(torch.cat(diffs).mean()),
        "topk_logprob_max_abs": max_abs,
        "windows_identical": float(agree_t.all(dim=1).float().mean()),
        "first_divergence": float(np.mean(firsts)),
    }


class LogitAgreement(BaseObjective):
    """Share of held-out token positions where the candidate's top next token is the original's.

    A governance check: the whole logit sequence is compared with the original's
    (details hold the top-k overlap, log-probability differences and where the greedy
    sequences first diverge).

    Args:
        top_k: Tokens per position compared.
        max_windows: Use at most this many held-out windows (``None``: all).
        batch_size: Windows per forward pass.
    """

    name = "logit_agreement"
    direction = Direction.MAXIMIZE
    unit = "fraction"

    def __init__(self, *, top_k: int = 5, max_windows: int | None = None, batch_size: int = 2) -> None:
        if not isinstance(top_k, int) or top_k < 1:
            raise SqueezerayError(f"top_k={top_k!r}: must be a positive integer")
        if max_windows is not None and (not isinstance(max_windows, int) or max_windows < 1):
            raise SqueezerayError(f"max_windows={max_windows!r}: must be a positive integer or None")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise SqueezerayError(f"batch_size={batch_size!r}: must be a positive integer")
        self.top_k, self.max_windows, self.batch_size = top_k, max_windows, batch_size

    def measure(self, ctx: EvalContext) -> Measurement:
        windows = ctx.eval_data.ids[: self.max_windows]
        key = f"logit-topk:{ctx.eval_data.digest}:{windows.shape[0]}:{self.top_k}"
        if key not in ctx.reference:
            ctx.reference[key] = reference_topk(ctx.original, windows, k=self.top_k, batch_size=self.batch_size)
        with materialized(ctx.candidate):
            stats = logit_agreement(ctx.reference[key], ctx.candidate, windows, batch_size=self.batch_size)
        details: dict[str, object] = {**stats, "top_k": self.top_k, "tokens": int(windows.numel())}
        where = f"{ctx.eval_data.source}, {windows.shape[0]} windows"
        return Measurement(self.name, stats["top1_agreement"], self.unit, Provenance.COMPUTED, where, details)
