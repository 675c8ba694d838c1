"""The static report: the same page as ``squeezeray ui``, self-contained in one HTML file.

plotly.js, the page's script and style, the front and every re-measured trial's
details are inlined; the file opens from disk with no server and makes no request.
In the report the sliders filter the points but cannot re-run the selector (the
recommendation shown is the one the search made without constraints); Export needs
``squeezeray ui``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squeezeray.export._study import StudyRecord
from squeezeray.ui._data import front_payload
from squeezeray.ui._data import trial_payload
from squeezeray.ui._page import page_html


def report_html(record: StudyRecord, layer_names: Sequence[str]) -> str:
    """The report page for a finished study of a model with these compressible layers."""
    front = front_payload(record)
    trials = {str(n): trial_payload(record, n, layer_names) for n in record.finals}
    return page_html(static={"front": front, "trials": trials})


def write_report(result: Any, path: str | Path) -> Path:
    """Write the report of a :class:`~squeezeray.search.SearchResult` to ``path`` (atomically); return the path."""
    record = StudyRecord.read(result.study)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(report_html(record, result.layer_names), encoding="utf-8")
    os.replace(tmp, p)
    return p
