#!/usr/bin/env python3
"""Writes models/tiny-llm.gguf: a small llama-architecture language model with
seeded weights, for llama.cpp's llama-server in tests and demos.

    .venv/bin/python models/generate_llm.py

Its vocabulary is the tokenizer's special and byte tokens plus a few dozen
words; the output rows of the special and byte tokens are zero, so greedy
decoding says words (readable, if meaningless) and never ends a sequence
early. Every weight comes from numpy's RandomState(seed): a run always writes
the same bytes. About 0.6 MB; one CPU thread decodes thousands of tokens a
second.
"""
import os

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "tiny-llm.gguf")

WORDS = (
    "the mesh node gossip token stream engine cache prefix route batch queue link job model gpu peer seed clock "
    "trace shard tensor prompt reply chunk load cluster owner retry ready drain merge relay sky river stone light "
    "quiet bright green warm cold fast slow early late open close north south east west small large first last "
    "again always never often here there today"
).split()
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 172
N_CTX = 4096
SPECIAL = ["<unk>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def vocabulary():
    tokens = SPECIAL + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581" + word for word in WORDS]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(WORDS)
    scores = [0.0] * len(tokens)
    return tokens, scores, types


def main():
    rng = np.random.RandomState(11)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    writer = gguf.GGUFWriter(PATH, "llama")
    writer.add_name("gpumesh tiny-llm")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", matrix(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    output = matrix(n_vocab, N_EMBD)
    output[: len(SPECIAL) + 256] = 0.0  # only words win the argmax
    writer.add_tensor("output.weight", output)
    for layer in range(N_LAYER):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(N_EMBD, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(N_EMBD, np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_down.weight", matrix(N_EMBD, N_FF))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {PATH} ({os.path.getsize(PATH)} bytes)")


if __name__ == "__main__":
    main()
