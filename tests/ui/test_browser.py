"""The front page in real headless Chromium (Playwright driving Debian's chromium package).

Needs ``apt-get install -y chromium`` and ``pip install playwright`` (no ``playwright install``:
the browser is the system's). Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; the browser comes from apt-get install -y chromium)"
    if not Path(CHROMIUM).is_file():
        return f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    return None


MISSING = _missing()
ON_CI = os.environ.get("CI", "").lower() == "true"  # CI installs the browser (scripts/setup.sh): missing is a failure
pytestmark = pytest.mark.skipif(MISSING is not None and not ON_CI, reason=MISSING or "")


@pytest.fixture(autouse=True)
def _browser_present() -> None:
    if MISSING is not None:
        pytest.fail(f"CI=true, but the browser tests cannot run: {MISSING}")


@pytest.fixture(scope="module")
def server(tiny, tiny_search, tmp_path_factory) -> Iterator[dict]:  # noqa: ANN001
    from squeezeray.export import ExportConfig
    from squeezeray.export import StudyRecord
    from squeezeray.ui import FrontApp
    from squeezeray.ui import make_server

    out = tmp_path_factory.mktemp("ui-exports")
    record = StudyRecord.read(tiny_search.study)
    app = FrontApp(record, tiny, out / "models", export_config=ExportConfig(registry=out / "registry.json"))
    srv = make_server(app, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    assert host == "127.0.0.1"
    yield {"url": f"http://127.0.0.1:{port}/", "record": record, "registry": out / "registry.json", "port": port}
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server) -> Iterator[object]:  # noqa: ANN001
    """A fresh page on the front; every request it makes is recorded, and any not to 127.0.0.1 is aborted."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requests: list[str] = []

    def route(r) -> None:  # noqa: ANN001
        requests.append(r.request.url)
        if urllib.parse.urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server["url"])
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    pg.requests = requests  # type: ignore[attr-defined]
    yield pg
    assert not errors, f"JavaScript errors: {errors}"
    outside = [u for u in requests if urllib.parse.urlsplit(u).hostname != "127.0.0.1"]
    assert not outside, f"requests left localhost: {outside}"
    assert all(u.startswith(f"http://127.0.0.1:{server['port']}/") for u in requests), requests
    context.close()


def _click_trial(page, trial: int) -> None:  # noqa: ANN001
    """Click the scatter point of ``trial`` where Plotly drew it."""
    where = page.evaluate(
        """(trial) => {
            const gd = document.getElementById('plot');
            const traces = Array.from(gd.querySelectorAll('.scatterlayer .trace'));
            for (let k = 0; k < gd.data.length; k++) {
                const i = (gd.data[k].customdata || []).indexOf(trial);
                if (i < 0 || gd.data[k].name === 'recommended') continue;
                const box = traces[k].querySelectorAll('path.point')[i].getBoundingClientRect();
                return {x: box.x + box.width / 2, y: box.y + box.height / 2};
            }
            return null;
        }""",
        trial,
    )
    assert where is not None, f"trial {trial} is not drawn"
    page.mouse.move(where["x"], where["y"])
    page.mouse.click(where["x"], where["y"])


def test_front_page_click_views_and_slider(page, server, tiny) -> None:  # noqa: ANN001
    from squeezeray.ui import select_payload

    record = server["record"]
    # loaded from this server only: page, plotly.js from the plotly package, the API
    assert any(u.endswith("/static/plotly.min.js") for u in page.requests)
    assert any(u.endswith("/api/front") for u in page.requests)
    before = page.get_attribute("#recommended", "data-trial")
    assert before == str(select_payload(record, {})["selected"])
    assert page.locator("#plot .scatterlayer .trace").count() >= 3  # front, dominated, outside (+ original, star)

    # a click on a point shows that trial: objectives beside the original's, heat maps, plan JSON
    shown = int(page.get_attribute("#detail", "data-trial"))
    target = next(t for t in record.finals if t != shown)
    _click_trial(page, target)
    page.wait_for_selector(f"#detail[data-trial='{target}']", timeout=10_000)
    plan = json.loads(page.text_content("#plan-json"))
    assert plan == record.plan(target, tuple(tiny.layers)).to_dict()
    assert page.locator("#objectives-table tbody tr").count() == len(record.final_objectives)
    for heat in ("#heat-bits", "#heat-sparsity", "#heat-technique"):
        assert page.locator(f"{heat} .heatmaplayer").count() == 1

    # tightening the size slider to the smallest trial moves the recommendation there
    page.focus("#slider-max_size_bytes")
    page.keyboard.press("Home")
    page.wait_for_function(f"() => document.getElementById('recommended').dataset.trial !== '{before}'", timeout=10_000)
    after = int(page.get_attribute("#recommended", "data-trial"))
    smallest = float(record.front()["size"].min())
    assert after == select_payload(record, {"max_size_bytes": smallest})["selected"]
    assert "max_size_bytes" in page.text_content("#reason")
    assert page.locator("#plot .trace path.point").count() >= len(record.finals)

    # the 3-D scatter and the parallel coordinates draw too
    page.select_option("#view", "3d")
    page.wait_for_selector("#plot .gl-container", state="attached", timeout=10_000)
    page.select_option("#view", "parcoords")
    page.wait_for_selector("#plot .parcoords", state="attached", timeout=10_000)


def test_export_button_writes_a_model_that_loads_and_matches_its_card(page, server, tiny) -> None:  # noqa: ANN001
    import squeezeray
    from squeezeray.export import MeasuredOn
    from squeezeray.export import read_registry
    from squeezeray.objectives.perplexity import perplexity

    record = server["record"]
    target = int(page.get_attribute("#recommended", "data-trial"))
    page.click("#export-btn")
    page.wait_for_selector("#export-status[data-state='done'], #export-status[data-state='error']", timeout=180_000)
    assert page.get_attribute("#export-status", "data-state") == "done", page.text_content("#export-status")
    path = page.get_attribute("#export-status", "data-path")
    loaded = squeezeray.load(path)
    card = loaded.card
    assert card.search is not None and card.search.trial == target and card.search.study == record.name
    assert card.search.selection.startswith(f"trial {target} chosen")  # it was the recommendation
    assert card.search.storage.startswith("sqlite:///") and card.search.storage.endswith("study.db")
    ppl = card.objective("perplexity")
    assert ppl.measured_on is MeasuredOn.EXPORT
    measured, _ = perplexity(loaded.model, tiny.held_out.ids)
    assert measured == pytest.approx(ppl.value, rel=1e-9)
    # and the exported model is the trial the search measured (dense tensors now float16)
    assert ppl.value == pytest.approx(record.finals[target]["perplexity"].value, rel=1e-2)
    entries = read_registry(server["registry"])
    assert [e.path for e in entries] == [str(Path(path).resolve())]


def test_static_report_opens_from_disk_with_no_request(browser, tiny_search, tmp_path) -> None:  # noqa: ANN001
    from squeezeray.ui import write_report

    path = write_report(tiny_search, tmp_path / "report.html")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requests: list[str] = []

    def route(r) -> None:  # noqa: ANN001
        requests.append(r.request.url)
        if r.request.url == path.as_uri():
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(path.as_uri())
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert requests == [path.as_uri()]
    assert not errors
    assert pg.get_attribute("#recommended", "data-trial") == str(tiny_search.selected)
    assert pg.get_attribute("#detail", "data-trial") == str(tiny_search.selected)
    assert pg.is_disabled("#export-btn")
    context.close()
