#!/usr/bin/env python3
"""sentence-transformers CPU throughput (texts/s) for one sentence-embedding model folder: the baseline for Enclave's
embedding path.

Usage (the venv made for tests/fixtures/embeddings/make_fixtures.py; only PyPI packages, no hub access):

    /work/bench-data/st-venv/bin/python benches/embed_st.py --model FOLDER [--texts 256] [--repeats 3]
        [--threads N] [--batch 32] [--seq-len 128] [--dump-texts PATH]

It builds --texts texts of exactly --seq-len tokens each, special tokens included, as the model's own tokenizer counts
them (words taken in turn from a fixed list, each text starting at a different word, until the count is reached), and
checks that sentence-transformers' preprocessing gives every text exactly that length (no truncation, no padding).
One untimed warm-up pass, then --repeats timed passes of model.encode(texts, batch_size=--batch) on the CPU;
texts_per_s = texts / median pass time. Prints progress on stderr and ONE JSON line on stdout:

    {"impl": "sentence-transformers", "texts_per_s": ..., "batch": 32, "seq_len": 128, "threads": ..., "torch": ...,
     "model": ..., "texts": ..., "repeats": ..., "pass_s": [...]}

--dump-texts PATH writes the exact texts as a JSON list, so a Rust benchmark can embed the identical inputs.
--threads defaults to every core (os.cpu_count()).
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

WORDS = (
    "the server reads every request and returns a vector for each text so that search ranking clustering and "
    "deduplication can compare meanings quickly while the model runs on ordinary hardware inside a private network "
    "where documents never leave the building and latency matters for people waiting on answers about contracts "
    "invoices manuals tickets emails reports policies and many other kinds of business records stored over years"
).split()


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


def build_texts(tokenizer, n: int, seq_len: int) -> list:
    texts = []
    for i in range(n):
        words, k, misses = [], (i * 7) % len(WORDS), 0
        while True:
            cand = " ".join(words + [WORDS[k % len(WORDS)]])
            c = count_tokens(tokenizer, cand)
            k += 1
            if c <= seq_len:
                words.append(WORDS[(k - 1) % len(WORDS)])
                misses = 0
                if c == seq_len:
                    break
            else:
                misses += 1
                if misses > len(WORDS):
                    sys.exit(f"cannot reach exactly {seq_len} tokens for text {i} (stuck at {len(words)} words)")
        texts.append(" ".join(words))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="sentence-transformers model folder")
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--dump-texts", type=Path, help="write the texts here as a JSON list")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(args.model), device="cpu")
    if model.max_seq_length < args.seq_len:
        sys.exit(f"max_seq_length {model.max_seq_length} < --seq-len {args.seq_len}: texts would be truncated")

    texts = build_texts(model.tokenizer, args.texts, args.seq_len)
    lengths = model[0].preprocess(texts)["attention_mask"].sum(1).tolist()
    counts = sorted(set(lengths))
    print(f"token count check: {len(texts)} texts, sentence-transformers lengths {counts} "
          f"(want [{args.seq_len}])", file=sys.stderr)
    assert counts == [args.seq_len], counts
    if args.dump_texts:
        args.dump_texts.parent.mkdir(parents=True, exist_ok=True)
        args.dump_texts.write_text(json.dumps(texts, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        print(f"texts written to {args.dump_texts}", file=sys.stderr)

    model.encode(texts, batch_size=args.batch, show_progress_bar=False)  # warm-up
    passes = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        model.encode(texts, batch_size=args.batch, show_progress_bar=False)
        passes.append(time.perf_counter() - t0)
        print(f"pass {r + 1}/{args.repeats}: {passes[-1]:.3f} s ({len(texts) / passes[-1]:.1f} texts/s)",
              file=sys.stderr)

    print(json.dumps({
        "impl": "sentence-transformers",
        "texts_per_s": round(len(texts) / statistics.median(passes), 2),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": args.model.name if args.model.name != "model" else args.model.parent.name,
        "texts": len(texts),
        "repeats": args.repeats,
        "pass_s": [round(p, 4) for p in passes],
    }))


if __name__ == "__main__":
    main()
