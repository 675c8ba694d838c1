"""The interactive front (``squeezeray ui``) and the static HTML report written after every search."""

from squeezeray.ui._data import front_payload
from squeezeray.ui._data import layer_table
from squeezeray.ui._data import pareto_mask
from squeezeray.ui._data import select_payload
from squeezeray.ui._data import trial_payload
from squeezeray.ui._report import report_html
from squeezeray.ui._report import write_report
from squeezeray.ui._server import HOST
from squeezeray.ui._server import FrontApp
from squeezeray.ui._server import make_server

__all__ = [
    "HOST",
    "FrontApp",
    "front_payload",
    "layer_table",
    "make_server",
    "pareto_mask",
    "report_html",
    "select_payload",
    "trial_payload",
    "write_report",
]
