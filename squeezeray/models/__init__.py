"""Loading the models squeezeray compresses."""

from squeezeray.models._load import DEFAULT_MODEL
from squeezeray.models._load import EMBEDDED
from squeezeray.models._load import LoadedModel
from squeezeray.models._load import ModelSource
from squeezeray.models._load import compressible_layers
from squeezeray.models._load import load_model
from squeezeray.models._load import model_fingerprint
from squeezeray.models._load import resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "LoadedModel",
    "ModelSource",
    "compressible_layers",
    "load_model",
    "model_fingerprint",
    "resolve_model",
]
