"""The decoder blocks of a Hugging Face causal LM: what block-wise calibration walks and offloading keeps on the host."""

from __future__ import annotations

from torch import nn

from squeezeray._errors import SqueezerayError


def decoder_parts(model: nn.Module) -> tuple[str, nn.ModuleList, nn.Module]:
    """(blocks' module name, the decoder blocks, the final norm) of a Hugging Face causal LM.

    Raises:
        SqueezerayError: the model has no decoder with ``layers`` and ``norm`` (the block-wise
            calibration needs both; :func:`squeezeray.compress.collect_stats` works on any model).
    """
    get = getattr(model, "get_decoder", None)
    decoder = get() if get is not None else None
    blocks = getattr(decoder, "layers", None)
    norm = getattr(decoder, "norm", None)
    if decoder is None or not isinstance(blocks, nn.ModuleList) or not isinstance(norm, nn.Module) or not len(blocks):
        raise SqueezerayError(f"{type(model).__name__}: no decoder with .layers and .norm found; block-wise "
                              "calibration needs them (use the whole-model calibration)")
    prefix = next(name for name, mod in model.named_modules() if mod is blocks)
    return prefix, blocks, norm
