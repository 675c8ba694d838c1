"""squeezeray.data."""
