"""squeezeray.models."""
