#!/usr/bin/env python3
"""Writes models/tiny-llm-hf/: the small llama-architecture model of
generate_llm.py (same words, same chat template, weights from the same seed)
in Hugging Face's layout, for vLLM in tests and benchmarks.

    .venv/vllm/bin/python models/generate_llm_hf.py

The tokenizer is a word-level one (tokenizers' WordLevel with a metaspace),
so that every token is a whole word: greedy decoding says words, and the
output rows of the special tokens are zero so that it never ends a sequence
early. Heads are 64 wide, a size vLLM's CPU attention kernels take. Every
weight comes from numpy's RandomState(seed): a run always writes the same
bytes.
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from generate_llm import CHAT_TEMPLATE, SPECIAL, WORDS

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tiny-llm-hf")

N_EMBD = 128
N_LAYER = 2
N_HEAD = 2
N_FF = 256
N_CTX = 4096
SPACE = "\u2581"
# The chat template's words and marks, besides the model's own words.
TEMPLATE_WORDS = ["user", "assistant", "system"]
MARKS = [":", "\n"]


def tokenizer(vocab):
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(mark, "isolated") for mark in MARKS]
        + [pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(SPECIAL)
    return tok


def main():
    os.makedirs(OUT, exist_ok=True)
    names = SPECIAL + [SPACE + word for word in WORDS + TEMPLATE_WORDS] + [SPACE + mark for mark in MARKS]
    vocab = {name: index for index, name in enumerate(names)}
    n_vocab = len(vocab)
    tokenizer(vocab).save(os.path.join(OUT, "tokenizer.json"))
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as out:
        json.dump({
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE, "model_max_length": N_CTX, "add_bos_token": True,
        }, out, indent=1)
    with open(os.path.join(OUT, "config.json"), "w") as out:
        json.dump({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": N_EMBD,
            "intermediate_size": N_FF, "num_hidden_layers": N_LAYER, "num_attention_heads": N_HEAD,
            "num_key_value_heads": N_HEAD, "vocab_size": n_vocab, "max_position_embeddings": N_CTX,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
            "tie_word_embeddings": False, "torch_dtype": "float32", "hidden_act": "silu",
        }, out, indent=1)

    rng = np.random.RandomState(11)

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    tensors = {"model.embed_tokens.weight": matrix(n_vocab, N_EMBD), "model.norm.weight": np.ones(N_EMBD, np.float32)}
    output = matrix(n_vocab, N_EMBD)
    output[: len(SPECIAL)] = 0.0  # only words win the argmax
    tensors["lm_head.weight"] = output
    for layer in range(N_LAYER):
        block = f"model.layers.{layer}"
        tensors[f"{block}.input_layernorm.weight"] = np.ones(N_EMBD, np.float32)
        tensors[f"{block}.post_attention_layernorm.weight"] = np.ones(N_EMBD, np.float32)
        for name in ("q", "k", "v", "o"):
            tensors[f"{block}.self_attn.{name}_proj.weight"] = matrix(N_EMBD, N_EMBD)
        tensors[f"{block}.mlp.gate_proj.weight"] = matrix(N_FF, N_EMBD)
        tensors[f"{block}.mlp.up_proj.weight"] = matrix(N_FF, N_EMBD)
        tensors[f"{block}.mlp.down_proj.weight"] = matrix(N_EMBD, N_FF)
    save_file(tensors, os.path.join(OUT, "model.safetensors"))
    print(f"wrote {OUT} ({n_vocab} tokens)")


if __name__ == "__main__":
    main()
