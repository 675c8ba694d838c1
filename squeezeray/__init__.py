"""squeezeray: automated per-layer compression search for large language models."""

__version__ = "0.1.0"
