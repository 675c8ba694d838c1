"""squeezeray.search."""
