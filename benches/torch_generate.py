"""PyTorch + transformers baseline for the GPU benchmark (kernels/run-on-gpu.sh torch).

Loads a random-weight model folder written by `enclave write-test-model` in bf16 on the GPU
and times `generate()` with a static cache, compiled where torch.compile works, at the batch
sizes of Enclave's GPU benchmark: 1, 64 and 256 sequences, 512 input tokens, 256 output tokens,
greedy and without early stopping. Prints output tokens/s per batch size.
"""
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def run(model, batch, input_len=512, output_len=256, vocab=None):
    ids = torch.randint(0, vocab, (batch, input_len), device="cuda")
    mask = torch.ones_like(ids)
    kwargs = dict(
        max_new_tokens=output_len,
        min_new_tokens=output_len,
        do_sample=False,
        cache_implementation="static",
        pad_token_id=0,
    )
    model.generate(ids[:, :16], attention_mask=mask[:, :16], max_new_tokens=4, do_sample=False,
                   cache_implementation="static", pad_token_id=0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, **kwargs)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    generated = (out.shape[1] - input_len) * batch
    return generated / elapsed, elapsed


def main():
    folder = sys.argv[1]
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size
    try:
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
        compiled = "torch.compile(reduce-overhead)"
    except Exception as e:  # noqa: BLE001 - any failure means eager mode
        compiled = f"eager ({e})"
    print(f"model {folder}, {compiled}, torch {torch.__version__}")
    for batch in (1, 64, 256):
        try:
            tps, secs = run(model, batch, vocab=vocab)
            print(f"batch {batch}: {tps:.1f} output tok/s ({secs:.1f} s)")
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch}: out of memory")
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
