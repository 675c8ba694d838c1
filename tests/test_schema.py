"""The one schema helper: numeric settings are checked and worded in one place."""

from __future__ import annotations

import pytest

from squeezeray._errors import DataError
from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_int
from squeezeray._schema import check_number


def test_check_int_names_the_field_and_the_value() -> None:
    assert check_int(3, field="n") == 3 and check_int(0, field="seed", minimum=0) == 0
    with pytest.raises(SqueezerayError, match=r"^evo n_seeds=0: must be a positive integer$"):
        check_int(0, field="n_seeds", where="evo ")
    with pytest.raises(DataError, match=r"^seed=-1: must be a non-negative integer$"):
        check_int(-1, field="seed", minimum=0, error=DataError)
    for bad in (True, 2.0, "2", None):
        with pytest.raises(SqueezerayError, match="must be a positive integer"):
            check_int(bad, field="n")


def test_check_number_takes_ints_and_floats_not_bools() -> None:
    assert check_number(2, field="x") == 2.0 and check_number(0.5, field="x") == 0.5
    for bad in (-0.1, True, "1", None):
        with pytest.raises(SqueezerayError, match=r"x=.*: must be a non-negative number"):
            check_number(bad, field="x")
