"""A tiny randomly initialised Llama with the embedded model's tokenizer, for fast search tests."""

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
