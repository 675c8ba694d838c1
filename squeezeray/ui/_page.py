"""The page: one HTML template, its script and style, and the plotly.js of the installed ``plotly`` package.

Served (``squeezeray ui``), the page links ``/static/...`` and asks the JSON API;
as a report (:func:`squeezeray.ui.write_report`), every script, the style and the data
are inlined, so the file opens anywhere with no server and no network.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

from squeezeray._errors import SqueezerayError

_STATIC = {
    "app.js": "application/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "plotly.min.js": "application/javascript; charset=utf-8",
}


@functools.cache
def plotly_js_path() -> Path:
    """The plotly.js bundle shipped inside the ``plotly`` Python package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise SqueezerayError(f"plotly.min.js not found at {path}; reinstall the plotly package")
    return path


def _asset(name: str) -> bytes:
    return importlib.resources.files("squeezeray.ui").joinpath("static", name).read_bytes()


def static_file(name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of a page asset, or None for an unknown name."""
    if name not in _STATIC:
        return None
    body = plotly_js_path().read_bytes() if name == "plotly.min.js" else _asset(name)
    return _STATIC[name], body


def _inline_script(source: str, what: str) -> str:
    if "</script" in source.lower():
        raise SqueezerayError(f"{what}: contains '</script' and cannot be inlined into the report")
    return f"<script>{source}</script>"


def page_html(*, static: dict[str, Any] | None) -> str:
    """The page; with ``static`` data (front + every trial), a self-contained report."""
    template = _asset("index.html").decode()
    if static is None:
        head = '<link rel="stylesheet" href="/static/app.css">'
        scripts = '<script src="/static/plotly.min.js"></script>\n<script src="/static/app.js"></script>'
        data = ""
    else:
        head = f"<style>{_asset('app.css').decode()}</style>"
        scripts = (
            _inline_script(plotly_js_path().read_text(encoding="utf-8"), "plotly.min.js") + "\n"
            + _inline_script(_asset("app.js").decode(), "app.js")
        )
        payload = json.dumps(static, allow_nan=False).replace("</", "<\\/")
        data = f'<script id="squeezeray-data" type="application/json">{payload}</script>'
    return template.replace("<!--HEAD-->", head).replace("<!--DATA-->", data).replace("<!--SCRIPTS-->", scripts)
