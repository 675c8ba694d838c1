"""squeezeray.kernels."""
