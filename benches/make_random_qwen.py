#!/usr/bin/env python3
"""Write a random-weight model with the exact shape of Qwen2.5-0.5B-Instruct.

Usage: make_random_qwen.py OUT_DIR {bf16|f32} [TOKENIZER_DIR]

Weights are drawn once in bf16 (seed 0, normal std 0.02, biases 0, norms 1), so the
f32 model is the bf16 model upcast exactly: both dtypes describe the same network.
The real Qwen2.5 tokenizer files are copied next to the weights, and a
generation_config.json is written, so the folder looks like the published checkpoint.
Used by benches/llamacpp_baseline.sh; needs torch and transformers.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja"]


def main() -> None:
    if len(sys.argv) not in (3, 4) or sys.argv[2] not in ("bf16", "f32"):
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[sys.argv[2]]
    repo = Path(__file__).resolve().parents[1]
    tok_dir = Path(sys.argv[3]) if len(sys.argv) == 4 else repo.parent / "shared/data/tokenizers/qwen2.5-instruct"

    config = Qwen2Config(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        initializer_range=0.02, bos_token_id=151643, eos_token_id=151645,
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # initialise directly in bf16 (about 1 GB)
    model = Qwen2ForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    model = model.to(dtype)
    model.save_pretrained(out, safe_serialization=True)

    # Also keep rope_theta at the top level, where pre-v5 loaders look for it.
    cfg = json.loads((out / "config.json").read_text())
    cfg.setdefault("rope_theta", 1_000_000.0)
    cfg["torch_dtype"] = {"bf16": "bfloat16", "f32": "float32"}[sys.argv[2]]
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    # Same values as the published Qwen2.5-0.5B-Instruct generation config.
    gen = {"bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643],
           "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")

    for name in TOKENIZER_FILES:
        shutil.copyfile(tok_dir / name, out / name)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({sys.argv[2]}, {n / 1e6:.1f}M parameters)")


if __name__ == "__main__":
    main()
