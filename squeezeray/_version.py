"""The package version (one owner: the package root and exports read it here)."""

__version__ = "0.1.0"
