"""A finished tiny search shared by the UI tests (about 30 s on two cores)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_search(tiny, tmp_path_factory):  # noqa: ANN001, ANN201
    """A 6-trial random search on the tiny model, re-measured on size, kl and perplexity, selected."""
    from squeezeray.search import SearchConfig
    from squeezeray.search import run_search
    from squeezeray.search import select_from
    from tests._tiny import TINY_DATA

    workdir = tmp_path_factory.mktemp("ui-search")
    cfg = SearchConfig(
        space="weights-int", n_trials=6, sampler="random", seed=0, data=TINY_DATA, workdir=workdir,
        final_objectives=("size", "kl", "perplexity"), rerank=6, hardware="epyc-9654",
    )
    result = run_search(cfg, bench=tiny, progress=False)
    return select_from(result, None, None)
