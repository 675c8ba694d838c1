"""squeezeray.hwprofiles."""
