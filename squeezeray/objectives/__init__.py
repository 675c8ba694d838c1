"""squeezeray.objectives."""
