"""The settings of every built-in technique (pure data, validated on construction)."""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar

from squeezeray.techniques._config import StepKind
from squeezeray.techniques._config import TechniqueConfig
from squeezeray.techniques._config import check_fraction
from squeezeray.techniques._config import check_group_divides
from squeezeray.techniques._config import check_group_size
from squeezeray.techniques._config import check_int_choice
from squeezeray.techniques._formats import SparsityPattern
from squeezeray.techniques._gguf import GGUFType

INT_BITS = (2, 3, 4, 5, 6, 7, 8)


def _gs_label(group_size: int | None) -> str:
    return "" if group_size is None else f"g{group_size}"


@dataclasses.dataclass(frozen=True)
class IntQuantConfig(TechniqueConfig):
    """Integer weight quantization shared by RTN, GPTQ and AWQ.

    Attributes:
        bits: Bits per weight code, 2..8.
        group_size: Inputs sharing one scale; None means one group per output row.
        symmetric: Symmetric grids store no zero point.
    """

    kind: ClassVar[StepKind] = StepKind.QUANTIZE
    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True
    gguf: GGUFType | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int_choice(self, "bits", self.bits, INT_BITS)
        check_group_size(self, self.group_size)
        if not isinstance(self.symmetric, bool):
            self._fail("symmetric", self.symmetric, "must be true or false")
        if self.gguf is not None:
            try:
                object.__setattr__(self, "gguf", GGUFType(self.gguf))
            except ValueError:
                self._fail("gguf", self.gguf, f"must be one of {', '.join(repr(t.value) for t in GGUFType)} or null")
            t = GGUFType(self.gguf)
            if (self.bits, self.group_size, self.symmetric) != (t.bits, t.group, not t.has_min):
                kind = "asymmetric (a float minimum per group)" if t.has_min else "symmetric"
                self._fail("gguf", t.value, f"is {t.bits}-bit {kind} in groups of {t.group}; got bits={self.bits}, "
                           f"group_size={self.group_size}, symmetric={self.symmetric}")

    def check_shape(self, out_features: int, in_features: int) -> None:
        check_group_divides(self, self.group_size, in_features)
        if self.gguf is not None and in_features % GGUFType(self.gguf).block:
            t = GGUFType(self.gguf)
            self._fail("gguf", t.value, f"needs rows of whole {t.block}-input blocks; this layer has "
                       f"{in_features} inputs")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if data.get("gguf") is None:
            data.pop("gguf", None)  # plans (and cache keys) without a GGUF type read as before the field existed
        return data

    def label(self) -> str:
        if self.gguf is not None:
            return f"{self.technique}-{GGUFType(self.gguf).value}"
        sym = "" if self.symmetric else "-asym"
        return f"{self.technique}-w{self.bits}{_gs_label(self.group_size)}{sym}"


@dataclasses.dataclass(frozen=True)
class RTNConfig(IntQuantConfig):
    """Round-to-nearest on the min/max grid."""

    technique: ClassVar[str] = "rtn"


@dataclasses.dataclass(frozen=True)
class GPTQConfig(IntQuantConfig):
    """GPTQ (Frantar et al. 2022, arXiv:2210.17323).

    Attributes:
        act_order: Quantize columns in order of decreasing Hessian diagonal.
            Group parameters are then fixed up front (static groups) so the stored
            layout needs no permutation index.
        damp: Dampening added to the Hessian diagonal, as a fraction of its mean.
        block_size: Columns per lazy-batch block.
        clip_search: Choose each (row, group)'s range by a clipping search on the output error
            (AWQ's, without the scaling) before solving, instead of the min/max range. Static groups only
            (``act_order`` or one group per row).
        float64_solve: Factorise and solve in float64 instead of float32 (label ``-f64``): about 1.5x slower on
            a CPU, far slower on most GPUs; for Hessians so ill-conditioned that float32 has to raise the damping
            (the layer's notes say when it did).
    """

    technique: ClassVar[str] = "gptq"
    act_order: bool = True
    damp: float = 0.01
    block_size: int = 128
    clip_search: bool = False
    float64_solve: bool = False

    def label(self) -> str:
        return (super().label() + ("" if self.act_order else "-noact") + ("-clip" if self.clip_search else "")
                + ("-f64" if self.float64_solve else ""))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.damp, (int, float)) or not 0 < float(self.damp) < 1:
            self._fail("damp", self.damp, "must be in (0, 1)")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            self._fail("block_size", self.block_size, "must be a positive integer")
        if not isinstance(self.clip_search, bool):
            self._fail("clip_search", self.clip_search, "must be true or false")
        if not isinstance(self.float64_solve, bool):
            self._fail("float64_solve", self.float64_solve, "must be true or false")
        if self.clip_search and self.gguf is not None:
            self._fail("clip_search", True, f"does not apply to the fixed GGUF block grid ({GGUFType(self.gguf).value})")
        if self.clip_search and not self.act_order and self.group_size is not None:
            self._fail("clip_search", True, "needs static groups: act_order, or one group per row (group_size null)")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for flag in ("clip_search", "float64_solve"):
            if not data.get(flag):
                data.pop(flag, None)  # plans (and cache keys) without it read as before the field existed
        return data


@dataclasses.dataclass(frozen=True)
class AWQConfig(IntQuantConfig):
    """AWQ (Lin et al. 2023, arXiv:2306.00978): activation-aware per-channel scaling.

    Attributes:
        grid_points: Values of the scaling exponent tried in [0, 1).
        clip_search: Also search a clipping ratio of the weight range per group.
    """

    technique: ClassVar[str] = "awq"
    grid_points: int = 20
    clip_search: bool = True

    def label(self) -> str:
        return super().label() + ("" if self.clip_search else "-noclip")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gguf is not None:
            self._fail("gguf", GGUFType(self.gguf).value, "AWQ's scaled grid is not a GGUF block format; use rtn or gptq")
        if not isinstance(self.grid_points, int) or self.grid_points < 1:
            self._fail("grid_points", self.grid_points, "must be a positive integer")


@dataclasses.dataclass(frozen=True)
class NF4Config(TechniqueConfig):
    """4-bit NormalFloat with one absmax scale per block (QLoRA, arXiv:2305.14314)."""

    technique: ClassVar[str] = "nf4"
    kind: ClassVar[StepKind] = StepKind.QUANTIZE
    group_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_group_size(self, self.group_size)
        if self.group_size is None:
            self._fail("group_size", None, "NF4 needs a block size")

    def check_shape(self, out_features: int, in_features: int) -> None:
        check_group_divides(self, self.group_size, in_features)

    def label(self) -> str:
        return f"nf4-g{self.group_size}"


@dataclasses.dataclass(frozen=True)
class FP8Config(TechniqueConfig):
    """FP8 E4M3 weights with an absmax scale per output row (or per group)."""

    technique: ClassVar[str] = "fp8"
    kind: ClassVar[StepKind] = StepKind.QUANTIZE
    group_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_group_size(self, self.group_size)

    def check_shape(self, out_features: int, in_features: int) -> None:
        check_group_divides(self, self.group_size, in_features)

    def label(self) -> str:
        return "fp8" if self.group_size is None else f"fp8-g{self.group_size}"


@dataclasses.dataclass(frozen=True)
class W8A8Config(TechniqueConfig):
    """INT8 weights (per row) and dynamic per-token INT8 activations, with
    SmoothQuant migration (Xiao et al. 2022, arXiv:2211.10438).

    Attributes:
        alpha: Migration strength: smooth_j = max|x_j|**alpha / max|w_j|**(1-alpha).
    """

    technique: ClassVar[str] = "w8a8"
    kind: ClassVar[StepKind] = StepKind.QUANTIZE
    alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self, "alpha", self.alpha, upper_inclusive=True)

    def label(self) -> str:
        return f"w8a8-a{self.alpha:g}"


@dataclasses.dataclass(frozen=True)
class PruneConfig(TechniqueConfig):
    """Pruning shared by magnitude, Wanda and SparseGPT.

    Attributes:
        sparsity: Fraction of weights removed, in [0, 1). For ``nm`` it is implied
            (1 - n/m) and may be left null.
        pattern: unstructured, nm, rows (output channels) or heads.
        n, m: For ``nm``: keep n of every m consecutive inputs (2:4 by default).
        head_dim: For ``heads``: output rows per attention head.
    """

    kind: ClassVar[StepKind] = StepKind.PRUNE
    sparsity: float | None = 0.5
    pattern: SparsityPattern = SparsityPattern.UNSTRUCTURED
    n: int = 2
    m: int = 4
    head_dim: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pattern is SparsityPattern.NM:
            if not (isinstance(self.m, int) and isinstance(self.n, int) and 0 < self.n < self.m <= 16):
                self._fail("n:m", f"{self.n}:{self.m}", "needs 0 < n < m <= 16")
            implied = 1 - self.n / self.m
            if self.sparsity is None:
                object.__setattr__(self, "sparsity", implied)
            elif abs(float(self.sparsity) - implied) > 1e-9:
                self._fail("sparsity", self.sparsity, f"contradicts {self.n}:{self.m} (implies {implied:g})")
        if self.sparsity is None:
            self._fail("sparsity", None, "is required for this pattern")
        check_fraction(self, "sparsity", self.sparsity)
        if self.pattern is SparsityPattern.HEADS and (not isinstance(self.head_dim, int) or self.head_dim < 1):
            self._fail("head_dim", self.head_dim, "must be a positive integer")

    def check_shape(self, out_features: int, in_features: int) -> None:
        if self.pattern is SparsityPattern.NM and in_features % self.m:
            self._fail("m", self.m, f"does not divide the layer's input width {in_features}")
        if self.pattern is SparsityPattern.HEADS and out_features % self.head_dim:
            self._fail("head_dim", self.head_dim, f"does not divide the layer's output width {out_features}")

    def label(self) -> str:
        if self.pattern is SparsityPattern.NM:
            return f"{self.technique}-{self.n}:{self.m}"
        suffix = "" if self.pattern is SparsityPattern.UNSTRUCTURED else f"-{self.pattern.value}"
        return f"{self.technique}-s{round(100 * float(self.sparsity or 0))}{suffix}"


@dataclasses.dataclass(frozen=True)
class MagnitudeConfig(PruneConfig):
    """Remove the smallest |W| (per row for unstructured)."""

    technique: ClassVar[str] = "magnitude"


@dataclasses.dataclass(frozen=True)
class WandaConfig(PruneConfig):
    """Wanda (Sun et al. 2023, arXiv:2306.11695): score |W_ij| * ||X_j||, per row."""

    technique: ClassVar[str] = "wanda"


@dataclasses.dataclass(frozen=True)
class SparseGPTConfig(PruneConfig):
    """SparseGPT (Frantar & Alistarh 2023, arXiv:2301.00774): OBS mask selection and
    weight update. Unstructured and n:m only.

    Attributes:
        damp: Dampening of the Hessian diagonal, as a fraction of its mean.
        block_size: Columns per block (also the mask-selection block for unstructured).
        float64_solve: Factorise the Hessian in float64 instead of float32 (label ``-f64``; the updates run in
            float32 either way): for Hessians so ill-conditioned that float32 has to raise the damping (the
            layer's notes say when it did).
    """

    technique: ClassVar[str] = "sparsegpt"
    damp: float = 0.01
    block_size: int = 128
    float64_solve: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pattern in (SparsityPattern.ROWS, SparsityPattern.HEADS):
            self._fail("pattern", self.pattern.value, "SparseGPT supports unstructured and nm only")
        if not isinstance(self.damp, (int, float)) or not 0 < float(self.damp) < 1:
            self._fail("damp", self.damp, "must be in (0, 1)")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            self._fail("block_size", self.block_size, "must be a positive integer")
        if not isinstance(self.float64_solve, bool):
            self._fail("float64_solve", self.float64_solve, "must be true or false")

    def label(self) -> str:
        return super().label() + ("-f64" if self.float64_solve else "")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if not data.get("float64_solve"):
            data.pop("float64_solve", None)  # plans (and cache keys) without it read as before the field existed
        return data


@dataclasses.dataclass(frozen=True)
class SVDConfig(TechniqueConfig):
    """Truncated SVD.

    Attributes:
        rank: Rank kept.
        residual: False: the layer becomes U @ V (must be the only step).
            True: factorise the error the earlier steps left (W_original - W_now)
            and add it back as a low-rank path (must be the last step).
    """

    technique: ClassVar[str] = "svd"
    kind: ClassVar[StepKind] = StepKind.LOWRANK
    rank: int = 64
    residual: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            self._fail("rank", self.rank, "must be a positive integer")

    def check_shape(self, out_features: int, in_features: int) -> None:
        if self.rank >= min(out_features, in_features):
            self._fail("rank", self.rank, f"must be below min(out, in) = {min(out_features, in_features)}")

    def label(self) -> str:
        return f"svd-r{self.rank}{'-res' if self.residual else ''}"
