"""Export: a compressed model as its own artifact (packed safetensors, model card, manifest, registry).

``export_model`` / ``export_trial`` write a folder; ``load`` (also ``squeezeray.load``)
checks every file's SHA-256 and rebuilds a runnable model; ``approve`` appends a
sign-off to the card; the registry file lists exports.
"""

from squeezeray.export._artifact import DenseDtype
from squeezeray.export._artifact import verify_folder
from squeezeray.export._card import Approval
from squeezeray.export._card import CardError
from squeezeray.export._card import MeasuredOn
from squeezeray.export._card import ModelCard
from squeezeray.export._card import ObjectiveRecord
from squeezeray.export._card import SearchRecord
from squeezeray.export._card_md import render_markdown
from squeezeray.export._export import DEFAULT_MEASURE
from squeezeray.export._export import ExportConfig
from squeezeray.export._export import ExportedModel
from squeezeray.export._export import approve
from squeezeray.export._export import export_model
from squeezeray.export._export import export_trial
from squeezeray.export._export import load
from squeezeray.export._export import read_card
from squeezeray.export._export import summarize
from squeezeray.export._registry import DEFAULT_REGISTRY
from squeezeray.export._registry import RegistryEntry
from squeezeray.export._registry import read_registry
from squeezeray.export._serving import ServingFormat
from squeezeray.export._serving import compressed_tensors_plan
from squeezeray.export._study import StudyRecord
from squeezeray.export._study import open_study

__all__ = [
    "Approval",
    "CardError",
    "DEFAULT_MEASURE",
    "DEFAULT_REGISTRY",
    "DenseDtype",
    "ExportConfig",
    "ExportedModel",
    "MeasuredOn",
    "ModelCard",
    "ObjectiveRecord",
    "RegistryEntry",
    "SearchRecord",
    "ServingFormat",
    "StudyRecord",
    "approve",
    "compressed_tensors_plan",
    "export_model",
    "export_trial",
    "load",
    "open_study",
    "read_card",
    "read_registry",
    "render_markdown",
    "summarize",
    "verify_folder",
]
