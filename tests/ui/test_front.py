"""The front's data (Pareto views, slider stops, heat-map table), the server's guards, and the static report."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.objectives import Direction
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_steps
from squeezeray.ui import layer_table
from squeezeray.ui import pareto_mask


def test_pareto_mask_follows_directions() -> None:
    values = [[1.0, 5.0], [2.0, 4.0], [2.0, 6.0], [3.0, 3.0]]
    mins = [Direction.MINIMIZE, Direction.MINIMIZE]
    assert pareto_mask(values, mins) == [True, True, False, True]
    # maximising the second column: row 2 (2, 6) now dominates rows 1 and 3 ... and row 0 still holds on column 0
    assert pareto_mask(values, [Direction.MINIMIZE, Direction.MAXIMIZE]) == [True, False, True, False]


def test_layer_table_lays_bits_sparsity_and_technique_out_by_block_and_kind() -> None:
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj",
             "model.layers.1.mlp.down_proj", "lm_head"]
    plan = CompressionPlan({
        names[0]: parse_steps("gptq-w4g128"), names[1]: parse_steps("wanda-2:4+rtn-w8"),
        names[2]: parse_steps("nf4-g64"), names[3]: parse_steps("magnitude-s25"),
    })
    t = layer_table(plan, names)
    assert t["blocks"] == ["0", "1", "-"]
    assert t["kinds"] == ["self_attn.q_proj", "mlp.down_proj", "lm_head"]
    assert t["bits"] == [[4, 4, None], [8, 16, None], [None, None, 16]]
    assert t["sparsity"] == [[0.0, 0.0, None], [0.5, 0.25, None], [None, None, 0.0]]
    assert t["technique"][1] == ["wanda-2:4+rtn-w8", "magnitude-s25", None]
    assert t["technique"][2][2] == "none"


def test_front_payload_has_every_view_and_slider(tiny_search) -> None:  # noqa: ANN001
    from squeezeray.export import StudyRecord
    from squeezeray.ui import front_payload
    from squeezeray.ui import select_payload

    record = StudyRecord.read(tiny_search.study)
    front = front_payload(record)
    assert front["objectives"] == ["size", "kl", "perplexity"]
    assert set(front["pareto"]) == {"kl,size", "perplexity,size", "kl,perplexity", "kl,perplexity,size"}
    by_trial = dict(zip(tiny_search.front["trial"], tiny_search.front["pareto"]))  # the driver's mask on all three
    assert front["pareto"]["kl,perplexity,size"] == [bool(by_trial[r["trial"]]) for r in front["rows"]]
    assert front["recommendation"]["selected"] == tiny_search.selected
    assert front["sliders"]["max_latency_ms"] == {"off": "no latency objective in this study"}
    sizes = front["sliders"]["max_size_bytes"]["stops"]
    assert sizes == sorted(tiny_search.front["size"].unique())
    # every slider stop keeps at least the trial at that stop
    for stop in sizes:
        assert select_payload(record, {"max_size_bytes": stop})["selected"] is not None
    none = select_payload(record, {"max_size_bytes": sizes[0] - 1})
    assert none["selected"] is None and "no candidate meets the constraints" in none["error"]


@pytest.fixture(scope="module")
def served(tiny, tiny_search, tmp_path_factory) -> Iterator[str]:  # noqa: ANN001
    from squeezeray.export import StudyRecord
    from squeezeray.ui import FrontApp
    from squeezeray.ui import make_server

    app = FrontApp(StudyRecord.read(tiny_search.study), tiny, tmp_path_factory.mktemp("exports"))
    srv = make_server(app, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _call(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_answers_only_its_own_host_and_same_origin_json(served) -> None:  # noqa: ANN001
    assert _call(f"{served}/api/front")[0] == 200
    status, body = _call(f"{served}/api/front", headers={"Host": "attacker.example:80"})
    assert status == 403 and "is not this server" in body["error"]
    status, body = _call(f"{served}/api/export", data=b'{"trial": 0}',
                         headers={"Content-Type": "application/json", "Origin": "http://attacker.example"})
    assert status == 403
    status, body = _call(f"{served}/api/export", data=b"trial=0", headers={"Content-Type": "text/plain"})
    assert status == 415


def test_server_errors_name_the_field(served) -> None:  # noqa: ANN001
    status, body = _call(f"{served}/api/select?max_size_bytes=big")
    assert status == 400 and body["error"] == "max_size_bytes='big': must be a number"
    status, body = _call(f"{served}/api/trial/999")
    assert status == 400 and "trial=999" in body["error"]
    status, body = _call(f"{served}/api/export", data=b'{"trial": "3"}', headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"] == "trial='3': must be an integer"
    assert _call(f"{served}/nothing")[0] == 404


def test_server_listens_on_loopback_only(tiny, tiny_search, tmp_path) -> None:  # noqa: ANN001
    from squeezeray.export import StudyRecord
    from squeezeray.ui import FrontApp
    from squeezeray.ui import make_server

    app = FrontApp(StudyRecord.read(tiny_search.study), tiny, tmp_path)
    srv = make_server(app, port=0)
    try:
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.server_close()
    with pytest.raises(SqueezerayError, match="port=70000"):
        make_server(app, port=70000)


def test_report_is_self_contained(tiny_search, tmp_path) -> None:  # noqa: ANN001
    from squeezeray.ui import write_report

    path = write_report(tiny_search, tmp_path / "report.html")
    html = path.read_text()
    assert "<script src=" not in html and "<link rel=\"stylesheet\"" not in html
    assert html.count('id="squeezeray-data"') == 1
    data = json.loads(html.split('id="squeezeray-data" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert sorted(int(k) for k in data["trials"]) == sorted(tiny_search.front["trial"])
    assert data["front"]["recommendation"]["selected"] == tiny_search.selected
    assert "plotly.js v" in html  # the bundle is inlined
