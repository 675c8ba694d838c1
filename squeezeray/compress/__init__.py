"""squeezeray.compress."""
