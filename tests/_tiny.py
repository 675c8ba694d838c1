"""Tiny randomly initialised models: a Llama with the embedded model's tokenizer for fast search tests, and
vocab-300 Llama / Gemma 3 builders for tests of model-level math."""

from __future__ import annotations

import torch

from squeezeray.models import LoadedModel
from squeezeray.models import ModelSource
from squeezeray.workbench import DataConfig
from squeezeray.workbench import Workbench

TINY_DATA = DataConfig(calib_seqs=4, calib_len=64, eval_tokens=256, eval_len=128, proxy_seqs=2)


def tiny_model(vocab_size: int) -> torch.nn.Module:
    import transformers

    torch.manual_seed(1234)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_bench(tokenizer_dir: str) -> Workbench:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    loaded = LoadedModel(tiny_model(len(tok)), tok, ModelSource("tiny-llama", tokenizer_dir, None))
    return Workbench(loaded, TINY_DATA)


def small_llama(*, seed: int, layers: int) -> torch.nn.Module:
    """A vocab-300, 64-wide tied Llama."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def small_gemma3(*, seed: int, layers: int, **extra: object) -> torch.nn.Module:
    """A vocab-300, 64-wide Gemma 3 alternating sliding-window (8) and global attention layers."""
    import transformers

    torch.manual_seed(seed)
    kinds = ["sliding_attention", "full_attention"] * (layers // 2)
    cfg = transformers.Gemma3TextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=8, layer_types=kinds, **extra,
    )
    return transformers.Gemma3ForCausalLM(cfg).eval()
