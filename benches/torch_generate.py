"""PyTorch + transformers baseline for the GPU benchmark (kernels/run-on-gpu.sh torch).

First measures the GPU's copy bandwidth and prints the batch-1 decode bound for the model
(bandwidth / bytes of weights read per token). Then loads the random-weight model folder written
by `enclave write-test-model` in bf16 on the GPU and times `generate()` with a static cache,
compiled where torch.compile works, at the batch sizes of Enclave's GPU benchmark: 1, 64 and 256
sequences, 512 input tokens, 256 output tokens, greedy and without early stopping. Prints output
tokens/s per batch size.
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


def copy_bandwidth(gib=4, repeats=20):
    """Bytes per second of a device-to-device copy (each byte is read once and written once)."""
    src = torch.empty(gib << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del src, dst
    torch.cuda.empty_cache()
    return 2 * (gib << 30) * repeats / elapsed


def main():
    folder = sys.argv[1]
    bandwidth = copy_bandwidth()
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size
    # A decode step reads every weight once, except an untied input embedding, of which it
    # reads one row (a tied one is read in full as the LM head, and counted once here).
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if not model.config.tie_word_embeddings:
        weight_bytes -= model.get_input_embeddings().weight.numel() * 2
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s; weights read per token "
          f"{weight_bytes / 1e9:.2f} GB; batch-1 decode bound {bandwidth / weight_bytes:.1f} tok/s")
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
