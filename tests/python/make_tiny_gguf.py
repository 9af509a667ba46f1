#!/usr/bin/env python3
"""Writes a tiny llama-architecture GGUF model with random weights.

Usage:
    python3 tests/python/make_tiny_gguf.py OUT.gguf [--context-length N]

The model is for tests that need a real llama.cpp server without downloading
a model (crates/coordinator/tests/llama_cpp.rs): a valid `llama` model, 64
wide, 2 layers, 4 attention heads, a 128-wide feed-forward, a 256-token
context (or N, for a test that needs answers of thousands of tokens), F32 weights drawn from a fixed seed (the same file every time, under
1 MB), and a SentencePiece-style (`llama`) tokenizer: <unk>, <s>, </s>, the
256 byte tokens <0x00>..<0xFF> (so any text tokenizes, by byte fallback) and a
few hundred ordinary pieces. It carries a simple chat template, so chat
completions format their messages, and mean pooling, so a server started with
embeddings on returns one vector per input. What it generates is gibberish.

Exit codes: 0 written, 2 bad arguments, 3 the Python packages `gguf` and
`numpy` are missing (install them with
`python3 -m pip install -r tests/python/llama-requirements.txt`).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import gguf
    import numpy as np
except ImportError as missing:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        f"make_tiny_gguf.py: the Python package {missing.name!r} is not installed "
        f"for {sys.executable}: run "
        "`python3 -m pip install -r tests/python/llama-requirements.txt`\n"
    )
    sys.exit(3)

SEED = 20240611
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX = 256
HEAD_DIM = N_EMBD // N_HEAD
NAME = "llm-router tiny test model"

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

# Messages as "<|role|>\ncontent\n", then the assistant's turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

WORDS = """
the of and to in is you that it he was for on are as with his they at be this
have from or one had by word but not what all were we when your can said there
use an each which she do how their if will up other about out many then them
these so some her would make like him into time has look two more write go see
number no way could people my than first water been call who oil its now find
long down day did get come made may part sky blue why light red green sun air
hello world model router node token test tiny fast slow good new old big small
""".split()


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """The tokens, their scores and their types, ids in list order."""
    tokens = ["<unk>", "<s>", "</s>"]
    scores = [0.0, 0.0, 0.0]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)
    # SentencePiece marks a word's leading space with U+2581.
    pieces = ["\u2581"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces += [str(d) for d in range(10)]
    pieces += list(".,!?'\"-:;()")
    pieces += ["<|user|>", "<|assistant|>", "<|system|>"]
    pieces += ["\u2581" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    pieces += ["\u2581" + w for w in WORDS]
    seen: set[str] = set()
    for piece in pieces:
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        # Longer pieces first when pieces merge.
        scores.append(float(len(piece)) - 10.0)
        types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def write(path: Path, context_length: int = N_CTX) -> None:
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(SEED)

    def weights(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(NAME)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(context_length)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_pooling_type(gguf.PoolingType.MEAN)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are ggml's ne reversed: (rows = outputs, columns = inputs).
    writer.add_tensor("token_embd.weight", weights(n_vocab, N_EMBD, scale=0.5))
    for layer in range(N_LAYER):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", weights(N_EMBD, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.attn_k.weight", weights(N_HEAD_KV * HEAD_DIM, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.attn_v.weight", weights(N_HEAD_KV * HEAD_DIM, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.attn_output.weight", weights(N_EMBD, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weights(N_FF, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.ffn_up.weight", weights(N_FF, N_EMBD, scale=0.1))
        writer.add_tensor(f"{blk}.ffn_down.weight", weights(N_EMBD, N_FF, scale=0.1))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    # Logits of about 8 either side of zero, the special tokens' left at zero:
    # sampling all but never ends an answer at its first token (nor emits <s>
    # or <unk>), so every answer has text and a token count.
    output = weights(n_vocab, N_EMBD, scale=1.0)
    output[[UNK_ID, BOS_ID, EOS_ID]] = 0.0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> int:
    args = sys.argv[1:]
    context_length = N_CTX
    if len(args) == 3 and args[1] == "--context-length" and args[2].isdigit():
        context_length = int(args[2])
        args = args[:1]
    if len(args) != 1 or args[0].startswith("-") or context_length < 1:
        sys.stderr.write("usage: make_tiny_gguf.py OUT.gguf [--context-length N]\n")
        return 2
    path = Path(args[0])
    write(path, context_length)
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
