"""``squeezeray ui``: a small local web server over one finished study.

Standard library only: a :class:`ThreadingHTTPServer` bound to 127.0.0.1 (never another
interface), a JSON API and one static page that draws with the plotly.js bundled in the
installed ``plotly`` Python package. Nothing is fetched from outside the machine.

===============================  ==========================================================
route                            answer
===============================  ==========================================================
``GET /``                        the page
``GET /static/<file>``           ``app.js``, ``app.css``, ``plotly.min.js``
``GET /api/front``               :func:`squeezeray.ui._data.front_payload`
``GET /api/trial/<n>``           :func:`squeezeray.ui._data.trial_payload`
``GET /api/select?limits``       the selector's pick under ``max_accuracy_drop``,
                                 ``max_size_bytes``, ``max_latency_ms``
``POST /api/export``             ``{"trial": n, "constraints": {...}}``: export that trial
                                 (:func:`squeezeray.export.export_trial`); answers the path
                                 and the card
===============================  ==========================================================

Requests whose ``Host`` is not this server's loopback address are refused (DNS
rebinding), and so are cross-origin POSTs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import urllib.parse
from collections.abc import Callable
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray.export import ExportConfig
from squeezeray.export import StudyRecord
from squeezeray.export import export_trial
from squeezeray.ui._data import SLIDERS
from squeezeray.ui._data import front_payload
from squeezeray.ui._data import select_payload
from squeezeray.ui._data import trial_payload
from squeezeray.ui._page import page_html
from squeezeray.ui._page import static_file

HOST = "127.0.0.1"
_TRIAL = re.compile(r"^/api/trial/(\d+)$")


@dataclasses.dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, "application/json", json.dumps(data, allow_nan=False).encode())

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls.json({"error": message}, status)


class FrontApp:
    """The server's state: one study, the workbench that can re-apply its plans, where exports go.

    Call order: construct, then :meth:`get` / :meth:`post` per request (thread-safe: exports
    run one at a time; the study view is read once).

    Args:
        record: The study.
        bench: Workbench holding the model and calibration data the search used (checked).
        out_dir: Folder exports are written under (``<study>-t<trial>``).
        export_config: Settings of every export (dense dtype, registry, ...).
        layer_fn: Optional compressed-layer function (e.g. the search's layer cache).
    """

    def __init__(
        self, record: StudyRecord, bench: Any, out_dir: str | Path, *,
        export_config: ExportConfig | None = None, layer_fn: Callable[..., Any] | None = None,
    ) -> None:
        record.check_bench(bench)
        self.record = record
        self.bench = bench
        self.layer_names: tuple[str, ...] = tuple(bench.layers)
        self.out_dir = Path(out_dir)
        self.export_config = export_config or ExportConfig()
        self.layer_fn = layer_fn
        self.front = front_payload(record)
        self._export_lock = threading.Lock()

    # -------------------------------------------------------------- routes
    def get(self, path: str, query: dict[str, list[str]]) -> Response:
        if path in ("/", "/index.html"):
            return Response(200, "text/html; charset=utf-8", page_html(static=None).encode())
        if path.startswith("/static/"):
            found = static_file(path[len("/static/"):])
            if found is None:
                return Response.error(404, f"no static file {path!r}")
            content_type, body = found
            return Response(200, content_type, body)
        if path == "/api/front":
            return Response.json(self.front)
        m = _TRIAL.match(path)
        if m:
            return Response.json(trial_payload(self.record, int(m.group(1)), self.layer_names))
        if path == "/api/select":
            return Response.json(select_payload(self.record, parse_limits(query)))
        return Response.error(404, f"no route {path!r}")

    def post(self, path: str, body: Any) -> Response:
        if path != "/api/export":
            return Response.error(404, f"no route {path!r}")
        if not isinstance(body, dict) or "trial" not in body:
            raise SqueezerayError('export: the request body must be {"trial": <number>, "constraints": {...}}')
        trial = body["trial"]
        if not isinstance(trial, int) or isinstance(trial, bool):
            raise SqueezerayError(f"trial={trial!r}: must be an integer")
        limits = parse_limits({k: [str(v)] for k, v in (body.get("constraints") or {}).items() if v is not None})
        sel = select_payload(self.record, limits)
        picked = sel["selected"] == trial
        out = self.out_dir / f"{self.record.name}-t{trial}"
        with self._export_lock:
            exported = export_trial(
                self.record, trial, self.bench, out, config=self.export_config,
                selection=sel["reason"] if picked else "", constraints=limits if picked else None,
                layer_fn=self.layer_fn,
            )
        return Response.json({"path": str(exported.path.resolve()), "card": exported.card.to_dict()})


def parse_limits(query: dict[str, list[str]]) -> dict[str, float]:
    """Slider limits from a query string (``max_size_bytes=1.2e7``); anything else is refused."""
    out: dict[str, float] = {}
    for key, values in query.items():
        if key not in SLIDERS:
            raise SqueezerayError(f"constraint {key!r}: the page offers {', '.join(SLIDERS)}")
        if len(values) != 1:
            raise SqueezerayError(f"{key}: give one value, got {values!r}")
        try:
            value = float(values[0])
        except ValueError:
            raise SqueezerayError(f"{key}={values[0]!r}: must be a number") from None
        if not math.isfinite(value):
            raise SqueezerayError(f"{key}={values[0]!r}: must be finite")
        out[key] = value
    return out


def _handler(app: FrontApp, allowed_hosts: Sequence[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "squeezeray"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            return  # quiet: the CLI prints the URL, not every request

        def _host_ok(self) -> bool:
            return self.headers.get("Host", "") in allowed_hosts

        def _send(self, r: Response) -> None:
            self.send_response(r.status)
            self.send_header("Content-Type", r.content_type)
            self.send_header("Content-Length", str(len(r.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(r.body)

        def _run(self, fn: Callable[[], Response]) -> None:
            if not self._host_ok():
                self._send(Response.error(403, f"Host {self.headers.get('Host')!r} is not this server"))
                return
            try:
                self._send(fn())
            except SqueezerayError as err:
                self._send(Response.error(400, str(err)))

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query, keep_blank_values=False)
            self._run(lambda: app.get(url.path, query))

        def do_POST(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            origin = self.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc not in allowed_hosts:
                self._send(Response.error(403, f"Origin {origin!r} may not post here"))
                return
            if self.headers.get_content_type() != "application/json":
                self._send(Response.error(415, "POST bodies must be application/json"))
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, 1 << 20))

            def handle() -> Response:
                try:
                    body = json.loads(raw or b"null")
                except json.JSONDecodeError as err:
                    raise SqueezerayError(f"request body: not valid JSON ({err})") from None
                return app.post(url.path, body)

            self._run(handle)

    return Handler


def make_server(app: FrontApp, *, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``app`` on 127.0.0.1 (``port`` 0 picks a free one; read ``server.server_address``)."""
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise SqueezerayError(f"port={port!r}: must be 0..65535")

    class _Server(ThreadingHTTPServer):
        daemon_threads = True

    try:
        server = _Server((HOST, port), BaseHTTPRequestHandler)
    except OSError as err:
        raise SqueezerayError(f"port={port}: cannot listen on {HOST} ({err.strerror})") from None
    bound = server.server_address[1]
    server.RequestHandlerClass = _handler(app, (f"{HOST}:{bound}", f"localhost:{bound}"))
    return server
