"""Loading the models squeezeray compresses."""

from squeezeray.models._load import DEFAULT_MODEL
from squeezeray.models._load import EMBEDDED
from squeezeray.models._load import LoadedModel
from squeezeray.models._load import ModelDtype
from squeezeray.models._load import ModelSource
from squeezeray.models._load import compressible_layers
from squeezeray.models._load import dtype_name
from squeezeray.models._load import head_layer
from squeezeray.models._load import load_model
from squeezeray.models._load import load_tokenizer
from squeezeray.models._load import model_dtype
from squeezeray.models._load import model_fingerprint
from squeezeray.models._load import resolve_dtype
from squeezeray.models._load import TiedTable
from squeezeray.models._load import resolve_model
from squeezeray.models._load import tied_table

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "LoadedModel",
    "ModelDtype",
    "ModelSource",
    "compressible_layers",
    "dtype_name",
    "head_layer",
    "load_model",
    "load_tokenizer",
    "model_dtype",
    "model_fingerprint",
    "resolve_dtype",
    "TiedTable",
    "resolve_model",
    "tied_table",
]
