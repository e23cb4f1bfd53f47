#!/usr/bin/env python3
"""Generate the reference fixtures used by the Rust test suite (tests/fixtures/).

Run from the repository root:

    /work/venv/bin/python tests/make_fixtures.py [--shared ../shared] [--only models tokenizers chat_templates]

`--shared` is the shared data checkout (default: ../shared relative to the repository root); the tokenizers and chat
templates are read from `<shared>/data/tokenizers` and `<shared>/data/chat-templates`. Nothing is downloaded: the
Hugging Face hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE). Needs torch, numpy, safetensors, transformers,
tokenizers and jinja2 (the venv at /work/venv has them). Every run is deterministic (fixed seeds, one CPU thread, date
frozen at 2024-07-26 12:00), so regenerating with the same library versions gives byte-identical files.

It writes three kinds of fixtures:

1. tests/fixtures/models/<variant>/ -- tiny random-weight decoder models with reference logits.
   `config.json`, `generation_config.json` and float32 safetensors weights written by `save_pretrained`
   (qwen2_bias_tied is sharded: model-0000X-of-0000N.safetensors + model.safetensors.index.json), and
   `reference.safetensors` holding, for prompt i = 0, 1, 2:
     p{i}.input_ids       int64   [L]          random prompt (ids in [3, 256)), L = 7, 40, 90
     p{i}.prefill_logits  float32 [L, vocab]   logits at every prompt position, one full forward of the prompt
     p{i}.decode_ids      int64   [S]          S = 6 greedy ids: decode_ids[0] = argmax(prefill_logits[L-1]),
                                               decode_ids[j] = argmax(decode_logits[j-1])
     p{i}.decode_logits   float32 [S, vocab]   logits of decode_ids[j] fed alone at position L+j with the KV cache of
                                               the prompt and the earlier steps (teacher forcing)
   with metadata num_prompts, num_decode_steps, variant, transformers_version, torch_version.
   Every parameter is re-randomised after construction (linear weights, biases, RMSNorm gains around 1, embeddings),
   so a forgotten bias, norm or scaling changes the logits. transformers >= 5 writes the RoPE settings only as
   `rope_parameters`; the 4.x keys `rope_theta` / `rope_scaling` (what published checkpoints carry) and `torch_dtype`
   are added to config.json next to them, and a reload check proves transformers still reads the folder back to the
   same logits.

2. tests/fixtures/tokenizers/<tokenizer>.json -- encode/decode cases for every tokenizer folder with a tokenizer.json.
   The tokenizer is transformers' fast tokenizer over that tokenizer.json used verbatim (TokenizersBackend in
   transformers 5, PreTrainedTokenizerFast in 4.x), with the special tokens of tokenizer_config.json; padding and
   truncation baked into a tokenizer.json are off, as in transformers' encode(). transformers 5's AutoTokenizer
   instead rebuilds some tokenizers (LlamaTokenizer: Phi-3, Mistral) from vocab/merges with its own pre-tokenizer,
   which changes ids (Phi-3 leading spaces: 15 of llama.cpp's 46 Phi-3 vectors); the script reports where AutoTokenizer
   would differ. `clean_up_tokenization_spaces` is the value decode() really applies: transformers 5 ignores a true
   flag for BPE models (Llama 3.2's tokenizer_config sets it).

3. tests/fixtures/chat_templates/<name>.json -- chat templates rendered exactly as `apply_chat_template` renders them
   (transformers' sandboxed jinja environment), with `strftime_now` frozen, for the templates of the tokenizer folders
   and every file in chat-templates/. Besides the seven common cases (plus `no_thinking` for Qwen3) there are
   `tool_call_single`, `tool_call_roundtrip_string_args` and, for Mistral templates, `tool_call_roundtrip_id9`.
   A case whose template calls raise_exception(msg) has expected_error = msg; any other failure under Python's
   jinja2 (TypeError, UndefinedError, ...) is recorded as "<ExceptionClass>: <message>".
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import inspect
import json
import math
import os
import shutil
import struct
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jinja2  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils import chat_template_utils  # noqa: E402

try:  # transformers >= 5: the fast tokenizer class that uses tokenizer.json as-is
    from transformers.tokenization_utils_tokenizers import TokenizersBackend as VerbatimTokenizer
except ImportError:  # transformers 4.x
    from transformers import PreTrainedTokenizerFast as VerbatimTokenizer

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"

FROZEN_NOW = _dt.datetime(2024, 7, 26, 12, 0, 0)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(obj, ensure_ascii=False, indent=2))
        f.write("\n")


def reset_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


# --------------------------------------------------------------------------------------------------------------------
# 1. Tiny models with reference logits
# --------------------------------------------------------------------------------------------------------------------

COMMON_SHAPES = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    bos_token_id=1,
    eos_token_id=2,
    rms_norm_eps=1e-5,
    max_position_embeddings=256,
    rope_theta=10000.0,
)

# 40 and 90 cross 16-token KV-block boundaries, llama3_scaled's original context (32) and mistral_swa's window (20).
PROMPT_LENGTHS = (7, 40, 90)
DECODE_STEPS = 6
LINEAR_STD = 0.15
BIAS_STD = 0.1
NORM_STD = 0.1

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

# name -> (config class, model class, config overrides, seed, embedding std)
# Tied models get a smaller embedding std: the embedding is also the output projection, and
# logits ~ sqrt(hidden) * std there (0.25 -> std ~2); untied ones use 0.5 for the input side.
VARIANTS = {
    "llama3_scaled": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(num_key_value_heads=2, tie_word_embeddings=True, rope_scaling=dict(LLAMA3_SCALING)),
        1001,
        0.25,
    ),
    "llama2_untied_mha": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(num_key_value_heads=4, tie_word_embeddings=False, rms_norm_eps=1e-6),
        1002,
        0.5,
    ),
    "mistral_swa": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(num_key_value_heads=1, tie_word_embeddings=False, sliding_window=20),
        1003,
        0.5,
    ),
    "qwen2_bias_tied": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=False),
        1004,
        0.25,
    ),
    "qwen3_qknorm": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(num_key_value_heads=2, head_dim=32, tie_word_embeddings=False, attention_bias=False),
        1005,
        0.5,
    ),
}
SHARDED = {"qwen2_bias_tied": "100KB"}


def build_model(config_cls: str, model_cls: str, overrides: dict):
    kwargs = dict(COMMON_SHAPES)
    kwargs.update(copy.deepcopy(overrides))  # transformers edits rope dicts in place
    config = getattr(transformers, config_cls)(**kwargs)
    config._attn_implementation = "eager"
    model = getattr(transformers, model_cls)(config).to(torch.float32).eval()
    assert model.config._attn_implementation == "eager"
    return model


@torch.no_grad()
def rerandomize(model, emb_std: float) -> dict:
    """Give every parameter a distinctive random value; returns {kind: [parameter names]}."""
    kinds: dict[str, list[str]] = {"embedding": [], "norm": [], "bias": [], "linear": []}
    for name, p in model.named_parameters():  # a tied lm_head is the embedding and is listed once
        if name.endswith("embed_tokens.weight"):
            p.normal_(0.0, emb_std)
            kinds["embedding"].append(name)
        elif name.endswith("norm.weight"):  # input/post_attention_layernorm, final norm, q_norm, k_norm
            p.normal_(1.0, NORM_STD)
            kinds["norm"].append(name)
        elif name.endswith(".bias"):
            p.normal_(0.0, BIAS_STD)
            kinds["bias"].append(name)
        elif p.dim() == 2 and (name.endswith("_proj.weight") or name == "lm_head.weight"):
            p.normal_(0.0, LINEAR_STD)
            kinds["linear"].append(name)
        else:
            raise AssertionError(f"parameter {name} {tuple(p.shape)} has no re-randomisation rule")
    return kinds


def forward_kwargs(model, cache):
    params = inspect.signature(model.forward).parameters
    key = "cache" if "cache" in params else "past_key_values"
    return {key: cache}


def output_cache(out):
    return out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values


@torch.no_grad()
def full_logits(model, ids: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(ids.numel())[None]
    return model(input_ids=ids[None], position_ids=pos, use_cache=False).logits[0]


@torch.no_grad()
def cached_step(model, ids: torch.Tensor, start: int, cache):
    """Feed `ids` at positions start.. with `cache`; returns (logits [n, vocab], cache)."""
    pos = torch.arange(start, start + ids.numel())[None]
    out = model(input_ids=ids[None], position_ids=pos, use_cache=True, **forward_kwargs(model, cache))
    return out.logits[0], output_cache(out)


def check_llama3_bands(model) -> None:
    cfg = LLAMA3_SCALING
    head_dim = COMMON_SHAPES["head_dim"]
    theta = COMMON_SHAPES["rope_theta"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    orig = cfg["original_max_position_embeddings"]
    low_wavelen = orig / cfg["low_freq_factor"]  # 32
    high_wavelen = orig / cfg["high_freq_factor"]  # 8
    expected, bands = [], []
    for f in inv_freq.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            bands.append("high (kept)")
            expected.append(f)
        elif wavelen > low_wavelen:
            bands.append("low (/factor)")
            expected.append(f / cfg["factor"])
        else:
            smooth = (orig / wavelen - cfg["low_freq_factor"]) / (cfg["high_freq_factor"] - cfg["low_freq_factor"])
            bands.append(f"middle (smooth={smooth:.4f})")
            expected.append((1 - smooth) * f / cfg["factor"] + smooth * f)
    print("    llama3 rope bands (high: wavelen < 8, low: wavelen > 32):")
    for i, (f, b) in enumerate(zip(inv_freq.tolist(), bands)):
        print(f"      i={i} inv_freq={f:.6g} wavelen={2 * math.pi / f:9.2f}  {b}")
    assert any(b.startswith("high") for b in bands), "no high-frequency band"
    assert any(b.startswith("low") for b in bands), "no low-frequency band"
    assert any(b.startswith("middle") for b in bands), "no smoothed middle band"
    actual = model.model.rotary_emb.inv_freq.to(torch.float64)
    assert torch.allclose(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-6), (actual, expected)
    assert float(getattr(model.model.rotary_emb, "attention_scaling", 1.0)) == 1.0


def legacy_config_keys(path: Path) -> None:
    """Add the transformers 4.x keys (rope_theta, rope_scaling, torch_dtype) that published checkpoints carry."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    rope = cfg.get("rope_parameters")
    if rope is not None and "rope_theta" not in cfg:
        cfg["rope_theta"] = rope["rope_theta"]
        changed = True
    if rope is not None and "rope_scaling" not in cfg:
        scaling = {k: v for k, v in sorted(rope.items()) if k != "rope_theta"}
        cfg["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
        changed = True
    if "torch_dtype" not in cfg:
        cfg["torch_dtype"] = "float32"
        changed = True
    if changed:
        cfg = dict(sorted(cfg.items()))
        write_json(path, cfg)


@torch.no_grad()
def make_model_fixture(name: str, out_root: Path) -> dict:
    config_cls, model_cls, overrides, seed, emb_std = VARIANTS[name]
    print(f"  {name}: {model_cls}, seed {seed}")
    torch.manual_seed(seed)
    model = build_model(config_cls, model_cls, overrides)
    kinds = rerandomize(model, emb_std)
    print("    re-randomised: " + ", ".join(f"{len(v)} {k}" for k, v in kinds.items()))

    tied = model.config.tie_word_embeddings
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    if tied:
        assert head is emb or head.data_ptr() == emb.data_ptr(), "lm_head is not tied to the embedding"
    else:
        assert head.data_ptr() != emb.data_ptr() and not torch.equal(head, emb)
    if name == "llama3_scaled":
        check_llama3_bands(model)
    if name == "qwen2_bias_tied":
        assert len(kinds["bias"]) == 6, kinds["bias"]  # q, k, v biases in both layers
    if name == "qwen3_qknorm":
        assert sum(".q_norm." in n or ".k_norm." in n for n in kinds["norm"]) == 4
        assert model.model.layers[0].self_attn.q_proj.weight.shape == (4 * 32, 64)

    gen = torch.Generator().manual_seed(seed + 7919)
    vocab = model.config.vocab_size
    tensors: dict[str, torch.Tensor] = {}
    all_logits = []
    min_margin = math.inf
    for i, length in enumerate(PROMPT_LENGTHS):
        ids = torch.randint(3, vocab, (length,), generator=gen, dtype=torch.int64)
        prefill = full_logits(model, ids)

        # KV-cache path for the prompt: the last position fed alone after a cached prefill of the rest,
        # and a prefill split into 16-token chunks, must match the full forward.
        head_logits, cache = cached_step(model, ids[:-1], 0, None)
        last_logits, _ = cached_step(model, ids[-1:], length - 1, cache)
        diff_last = (last_logits[0] - prefill[-1]).abs().max().item()
        assert diff_last < 1e-5, f"{name} p{i}: cached last position differs by {diff_last}"
        assert (head_logits - prefill[:-1]).abs().max().item() < 1e-5
        cache, chunks = None, []
        for start in range(0, length, 16):
            chunk_logits, cache = cached_step(model, ids[start : start + 16], start, cache)
            chunks.append(chunk_logits)
        diff_chunked = (torch.cat(chunks) - prefill).abs().max().item()
        assert diff_chunked < 1e-5, f"{name} p{i}: chunked prefill differs by {diff_chunked}"

        # Teacher-forced decode with the KV cache.
        _, cache = cached_step(model, ids, 0, None)
        decode_ids, decode_logits = [], []
        next_id = int(prefill[-1].argmax())
        for j in range(DECODE_STEPS):
            decode_ids.append(next_id)
            step_logits, cache = cached_step(model, torch.tensor([next_id]), length + j, cache)
            decode_logits.append(step_logits[0])
            next_id = int(step_logits[0].argmax())
        # Greedy choices must not be near-ties, or a reimplementation could legitimately pick another id.
        chosen = torch.stack([prefill[-1]] + decode_logits[:-1])
        top2 = chosen.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).min().item()
        assert margin > 1e-3, f"{name} p{i}: greedy argmax margin only {margin}"
        min_margin = min(min_margin, margin)
        decode_ids_t = torch.tensor(decode_ids, dtype=torch.int64)
        decode_logits_t = torch.stack(decode_logits)
        # The same logits without a cache: one forward over prompt + decoded ids.
        replay = full_logits(model, torch.cat([ids, decode_ids_t]))[length:]
        diff_replay = (replay - decode_logits_t).abs().max().item()
        assert diff_replay < 1e-4, f"{name} p{i}: decode logits differ from a full forward by {diff_replay}"
        print(
            f"    p{i}: L={length:3d} cached-last diff {diff_last:.1e}, chunked diff {diff_chunked:.1e}, "
            f"decode-vs-full diff {diff_replay:.1e}, decode ids {decode_ids}"
        )

        tensors[f"p{i}.input_ids"] = ids.contiguous()
        tensors[f"p{i}.prefill_logits"] = prefill.to(torch.float32).contiguous()
        tensors[f"p{i}.decode_ids"] = decode_ids_t.contiguous()
        tensors[f"p{i}.decode_logits"] = decode_logits_t.to(torch.float32).contiguous()
        all_logits += [prefill, decode_logits_t]

    if name == "mistral_swa":
        check_sliding_window(model, config_cls, model_cls, overrides, tensors)

    stacked = torch.cat(all_logits)
    stats = {"max_abs": stacked.abs().max().item(), "std": stacked.std().item(), "margin": min_margin}
    print(f"    logits: max |logit| {stats['max_abs']:.3f}, std {stats['std']:.3f}, "
          f"smallest greedy top-1/top-2 gap {min_margin:.4f}")
    assert 1.0 <= stats["std"] <= 3.0, f"{name}: logit std {stats['std']:.3f} outside [1, 3]"

    out_dir = out_root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    save_kwargs = {"safe_serialization": True}
    if name in SHARDED:
        save_kwargs["max_shard_size"] = SHARDED[name]
    model.save_pretrained(out_dir, **save_kwargs)
    legacy_config_keys(out_dir / "config.json")
    save_file(
        tensors,
        str(out_dir / "reference.safetensors"),
        metadata={
            "num_prompts": str(len(PROMPT_LENGTHS)),
            "num_decode_steps": str(DECODE_STEPS),
            "variant": name,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        },
    )
    canonicalize_safetensors_header(out_dir / "reference.safetensors")
    verify_saved(name, out_dir, model_cls, tied, tensors)
    return stats


def canonicalize_safetensors_header(path: Path) -> None:
    """Rewrite a safetensors header in a fixed order. The safetensors library writes `__metadata__` from a hash map,
    so its key order (and the file's bytes) changes from run to run; sorting it makes regeneration byte-identical."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    metadata = header.pop("__metadata__", None)
    ordered = {}
    if metadata is not None:
        ordered["__metadata__"] = dict(sorted(metadata.items()))
    for key in sorted(header, key=lambda k: (header[k]["data_offsets"][0], k)):
        ordered[key] = header[key]
    encoded = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data section stays 8-byte aligned
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


@torch.no_grad()
def check_sliding_window(model, config_cls, model_cls, overrides, tensors) -> None:
    """The reference must really apply the window: compare with the same weights and no window, and with an
    explicit mask where query q sees keys k with q - 20 < k <= q (the window counts the query itself)."""
    window = overrides["sliding_window"]
    no_window = build_model(config_cls, model_cls, {**overrides, "sliding_window": None})
    no_window.load_state_dict(model.state_dict())
    for i, length in enumerate(PROMPT_LENGTHS):
        ids = tensors[f"p{i}.input_ids"]
        ref = tensors[f"p{i}.prefill_logits"]
        plain = full_logits(no_window, ids)
        diff = (plain - ref).abs().max().item()
        if length <= window:
            assert diff < 1e-5, f"short prompt changed by the window ({diff})"
        else:
            assert diff > 1e-2, f"prompt of {length} tokens unaffected by the sliding window ({diff})"
            first_affected = (plain - ref).abs().amax(dim=-1).gt(1e-5).nonzero()[0].item()
            assert first_affected == window, f"window first matters at position {first_affected}, not {window}"
        # decode steps too
        full = torch.cat([ids, tensors[f"p{i}.decode_ids"]])
        plain_dec = full_logits(no_window, full)[length:]
        dec_diff = (plain_dec - tensors[f"p{i}.decode_logits"]).abs().max().item()
        print(
            f"    sliding window {window}: p{i} prefill |diff| vs no window {diff:.3g}, decode {dec_diff:.3g}"
            + (f" (first position affected: {window})" if length > window else "")
        )
    # Explicit additive mask on the model without a window reproduces the windowed logits.
    ids = tensors["p2.input_ids"]
    n = ids.numel()
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    allowed = (k <= q) & (k > q - window)
    mask = torch.zeros(1, 1, n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)
    try:
        masked = no_window(input_ids=ids[None], attention_mask=mask, use_cache=False).logits[0]
    except Exception as e:  # custom 4D masks are an implementation detail; report rather than fail
        print(f"    (explicit 4D mask check skipped: {type(e).__name__}: {e})")
        return
    mdiff = (masked - tensors["p2.prefill_logits"]).abs().max().item()
    assert mdiff < 1e-5, f"window semantics differ from q-{window} < k <= q ({mdiff})"
    print(f"    explicit mask (q-{window} < k <= q) reproduces the windowed logits (|diff| {mdiff:.1e})")


@torch.no_grad()
def verify_saved(name: str, out_dir: Path, model_cls: str, tied: bool, tensors) -> None:
    files = sorted(p.name for p in out_dir.iterdir())
    weight_files = [f for f in files if f.startswith("model") and f.endswith(".safetensors")]
    keys = set()
    for wf in weight_files:
        with safe_open(str(out_dir / wf), "pt") as f:
            for key in f.keys():
                assert f.get_tensor(key).dtype == torch.float32, f"{wf}:{key} is not float32"
                keys.add(key)
    assert ("lm_head.weight" in keys) == (not tied), f"{name}: lm_head.weight presence wrong for tied={tied}"
    if name in SHARDED:
        assert "model.safetensors.index.json" in files and len(weight_files) > 1, files
    else:
        assert weight_files == ["model.safetensors"], files
    with safe_open(str(out_dir / "reference.safetensors"), "pt") as f:
        assert f.metadata()["variant"] == name
        assert sorted(f.keys()) == sorted(tensors)
        for key, value in tensors.items():
            stored = f.get_tensor(key)
            assert stored.dtype == value.dtype and torch.equal(stored, value), f"{name}: {key} reads back differently"
    reloaded = getattr(transformers, model_cls).from_pretrained(
        out_dir, attn_implementation="eager", dtype=torch.float32
    )
    reloaded.eval()
    for i in range(len(PROMPT_LENGTHS)):
        logits = full_logits(reloaded, tensors[f"p{i}.input_ids"])
        diff = (logits - tensors[f"p{i}.prefill_logits"]).abs().max().item()
        assert diff < 1e-5, f"{name}: reloaded folder gives different logits ({diff})"
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    assert size < 2 * 1024 * 1024, f"{name}: fixture folder is {size} bytes"
    print(f"    saved {', '.join(files)} ({size / 1024:.0f} KiB); reload reproduces the logits")


def make_models() -> dict:
    print("== models")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out_root = FIXTURES / "models"
    out_root.mkdir(parents=True, exist_ok=True)
    return {name: make_model_fixture(name, out_root) for name in VARIANTS}


# --------------------------------------------------------------------------------------------------------------------
# 2. Tokenizer fixtures
# --------------------------------------------------------------------------------------------------------------------

TOKENIZER_TEXTS = [
    "Hello, world! This is a plain English sentence.",
    "   three leading spaces",
    "trailing spaces   ",
    "multiple    internal     spaces",
    " a single leading space",
    "tab\tseparated\t\tvalues\t",
    "line one\nline two\n\n\nline five\n",
    "windows\r\nline\r\n\r\nendings\r\n",
    " don't won't can't I'M you're it's we'll they'd",
    "Spaces before punctuation: a . b , c ! d ? it 's do n't they 're",
    "Punctuation!!! ... ?!? (parens) [brackets] {braces} <angles> \"double\" 'single' a-b a_b a/b a\\b",
    "Digits: 0 1 12 123 1234 12345 3.14159 -42 1e-10 0x1F",
    "A long number: 123456789012345678901234567890",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?}", v);\n}\n',
    "See https://example.com/path/to?query=1&lang=en#frag or mailto:someone@example.org",
    "café naïve résumé Ångström coöperate",
    "cafe\u0301 nai\u0308ve A\u030angstro\u0308m",
    "Straße, Fußgänger, GROSS, ß",
    "İstanbul ıi İI Iı",
    "Καλημέρα κόσμε, ΑΒΓΔ αβγδ",
    "Привет, мир! Ёжик в тумане.",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "你好，世界！今天天气很好。",
    "こんにちは世界、カタカナとひらがな。漢字も。",
    "안녕하세요 세계",
    "I ❤️ 🍕!",
    "👍🏽 👋🏿 thumbs",
    "family: 👨‍👩‍👧‍👦",
    "flags 🇯🇵🇺🇸🇪🇺",
    "\ufffd",
    "",
    "   \n\t ",
    "non\u00a0breaking\u200bzero\u2009width",
    "Mixed: English, 日本語, русский, العربية, 🚀 and 123.",
]

# (turn start, turn end) pairs; the first pair a tokenizer has as added tokens makes a chat-like case.
CHAT_MARKERS = [
    ("<|im_start|>", "<|im_end|>"),
    ("<|start_header_id|>", "<|eot_id|>"),
    ("<|user|>", "<|end|>"),
    ("<|user|>", "<|assistant|>"),
    ("[INST]", "[/INST]"),
    ("[CLS]", "[SEP]"),
]

PARTIAL_DECODE_TEXTS = ["👨‍👩‍👧‍👦", "🇯🇵 👍🏽", "你好，世界", "한국어 😀"]


def special_texts(tok) -> list[str]:
    """Strings containing the tokenizer's own special (and other added) tokens literally."""
    specials = list(tok.all_special_tokens)
    added = sorted(tok.added_tokens_decoder.items())
    if not specials:  # e.g. a bare tokenizer.json with no tokenizer_config: use its special added tokens
        specials = [t.content for _, t in added if t.special]
    non_special = [t.content for _, t in added if not t.special and t.content.strip() == t.content and t.content]
    added_contents = {t.content for _, t in added}
    texts = []
    for start, end in CHAT_MARKERS:
        if start in added_contents and end in added_contents:
            texts.append(f"{start}user\nHello!{end}\n")
            break
    for s in specials[:4]:
        texts.append(f"before {s} after")
        texts.append(s)
    for s in non_special[:2]:
        texts.append(f"x {s}y{s} z")
    return texts


def load_tokenizer(folder: Path):
    return VerbatimTokenizer.from_pretrained(str(folder))


def effective_cleanup(tok) -> bool:
    """Whether decode() really applies clean_up_tokenization_spaces. transformers >= 5 ignores the flag for BPE
    models (unless clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output is set); 4.x applied it."""
    if not tok.clean_up_tokenization_spaces:
        return False
    probe = "a . b , c ! d ? e 's f n't"
    ids = tok.encode(probe, add_special_tokens=False)
    raw_text = tok.backend_tokenizer.decode(ids, skip_special_tokens=False)
    return tok.decode(ids) != raw_text


def make_tokenizer_fixture(folder: Path, tok, out_dir: Path) -> dict:
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    raw.no_padding()
    raw.no_truncation()
    auto = AutoTokenizer.from_pretrained(str(folder))
    texts = TOKENIZER_TEXTS + special_texts(tok)
    cases, auto_diffs = [], []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        ids_special = tok.encode(text, add_special_tokens=True)
        assert ids == raw.encode(text, add_special_tokens=False).ids, (folder.name, text)
        assert ids_special == raw.encode(text, add_special_tokens=True).ids, (folder.name, text)
        case = {
            "text": text,
            "ids": ids,
            "ids_special": ids_special,
            "decoded": tok.decode(ids_special, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids_special, skip_special_tokens=True),
        }
        cases.append(case)
        if (
            auto.encode(text, add_special_tokens=False) != ids
            or auto.encode(text, add_special_tokens=True) != ids_special
            or auto.decode(ids_special, skip_special_tokens=False) != case["decoded"]
            or auto.decode(ids_special, skip_special_tokens=True) != case["decoded_skip"]
        ):
            auto_diffs.append(text)
    partial = []
    for text in PARTIAL_DECODE_TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        for k in range(1, len(ids) + 1):
            partial.append({"ids": ids[:k], "decoded": tok.decode(ids[:k], skip_special_tokens=False)})
    fixture = {
        "tokenizer": folder.name,
        "transformers_version": transformers.__version__,
        "clean_up_tokenization_spaces": effective_cleanup(tok),
        "cases": cases,
        "partial_decode": partial,
    }
    write_json(out_dir / f"{folder.name}.json", fixture)
    n_fffd = sum("\ufffd" in p["decoded"] for p in partial)
    if fixture["clean_up_tokenization_spaces"] != bool(tok.clean_up_tokenization_spaces):
        print(f"  {folder.name}: tokenizer_config sets clean_up_tokenization_spaces="
              f"{tok.clean_up_tokenization_spaces}, but decode() does not apply it (BPE model); recorded as "
              f"{fixture['clean_up_tokenization_spaces']}")
    print(
        f"  {folder.name}: {len(cases)} cases ({len(cases) - len(TOKENIZER_TEXTS)} with special-token text), "
        f"{len(partial)} partial decodes ({n_fffd} with U+FFFD), cleanup={fixture['clean_up_tokenization_spaces']}, "
        f"AutoTokenizer ({type(auto).__name__}) differs on {len(auto_diffs)} cases"
    )
    return {"cases": len(cases), "auto_class": type(auto).__name__, "auto_diffs": auto_diffs}


def make_tokenizers(tokenizers_dir: Path, cache: dict) -> dict:
    print("== tokenizers")
    out_dir = FIXTURES / "tokenizers"
    reset_dir(out_dir)
    summary = {}
    for folder in sorted(p for p in tokenizers_dir.iterdir() if p.is_dir()):
        if not (folder / "tokenizer.json").exists():
            print(f"  {folder.name}: no tokenizer.json, skipped")
            continue
        if folder.name not in cache:
            cache[folder.name] = load_tokenizer(folder)
        tok = cache[folder.name]
        summary[folder.name] = make_tokenizer_fixture(folder, tok, out_dir)
    return summary


# --------------------------------------------------------------------------------------------------------------------
# 3. Chat template fixtures
# --------------------------------------------------------------------------------------------------------------------

# chat-templates/*.jinja whose tokenizer is in tokenizers/ (chat-templates/SOURCE.md; Llama 3.1/3.3 share Llama 3.2's
# tokenizer and special tokens, Phi-3.5-mini uses Phi-3-mini's tokenizer).
TEMPLATE_TOKENIZER = {
    "Qwen-Qwen2.5-7B-Instruct": "qwen2.5-instruct",
    "meta-llama-Llama-3.1-8B-Instruct": "llama-3.2-instruct",
    "meta-llama-Llama-3.2-3B-Instruct": "llama-3.2-instruct",
    "meta-llama-Llama-3.3-70B-Instruct": "llama-3.2-instruct",
    "microsoft-Phi-3.5-mini-instruct": "phi-3-mini-4k-instruct",
}

# The rest have no tokenizer here, so they are rendered without one, with the named special tokens that the models'
# published tokenizer_config.json files set (what apply_chat_template would pass; those files are not in the shared
# data). Unset ones are left out (null in the fixture). Of these variables the templates read only bos_token
# (Mistral Nemo also eos_token), so the rendered text depends on nothing else here.
_LLAMA3_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
_DEEPSEEK_R1_TOKENS = {  # DeepSeek-R1 distills (Llama and Qwen bases alike); unk_token is null upstream
    "bos_token": "<｜begin▁of▁sentence｜>",
    "eos_token": "<｜end▁of▁sentence｜>",
    "pad_token": "<｜end▁of▁sentence｜>",
}
_COHERE_TOKENS = {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>", "pad_token": "<PAD>"}
TEMPLATE_ONLY_TOKENS = {
    "CohereForAI-c4ai-command-r-plus-tool_use": _COHERE_TOKENS,
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": _COHERE_TOKENS,
    # Hermes 2 Pro / Hermes 3: Llama 3 vocabulary with ChatML; <|im_end|> is their eos.
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"},
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"},
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": _DEEPSEEK_R1_TOKENS,
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": _DEEPSEEK_R1_TOKENS,
    "llama-cpp-deepseek-r1": _DEEPSEEK_R1_TOKENS,
    # Llama 3 / 3.1 fine-tunes that keep Llama 3's special tokens.
    "fireworks-ai-llama-3-firefunction-v2": _LLAMA3_TOKENS,
    "meetkai-functionary-medium-v3.1": _LLAMA3_TOKENS,
    "meetkai-functionary-medium-v3.2": _LLAMA3_TOKENS,
    "google-gemma-2-2b-it": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "mistralai-Mistral-Nemo-Instruct-2407": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
}

NAMED_SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            # Quotes, an apostrophe, <, > and & and a non-ASCII letter: tojson must not HTML-escape or \u-escape them.
            "description": 'Get the current weather in a city, e.g. "Zürich" (it\'s fast & uses <metric> units).',
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "Name of the city"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the local time in a time zone.",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string", "description": "IANA time zone, e.g. Asia/Tokyo"}},
                "required": ["timezone"],
            },
        },
    },
]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
MULTI_TURN = [
    SYSTEM,
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "What is 2 + 2?"},
]


def tool_call_messages(content, string_args=False, ids=("call_1", "call_2"), calls=2):
    """user -> assistant with `calls` parallel tool calls -> one tool message per call."""
    calls_spec = [
        ("get_weather", {"city": "Paris", "unit": "celsius"}, '{"temperature": 18, "condition": "cloudy"}'),
        ("get_time", {"timezone": "Asia/Tokyo"}, "15:04"),
    ][:calls]
    question = "What's the weather in Paris, and what time is it in Tokyo?" if calls == 2 else \
        "What's the weather in Paris?"
    messages = [
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": fn, "arguments": json.dumps(args) if string_args else args},
                }
                for call_id, (fn, args, _) in zip(ids, calls_spec)
            ],
        },
    ]
    for call_id, (fn, _, result) in zip(ids, calls_spec):
        messages.append({"role": "tool", "tool_call_id": call_id, "name": fn, "content": result})
    return messages


# Extra variables some templates need on every call. firefunction-v2's template concatenates `functions` (the tool
# specs as a JSON string) and `datetime` (a date string) into its system prompt and fails when they are undefined.
TEMPLATE_KWARGS = {
    "fireworks-ai-llama-3-firefunction-v2": {
        "functions": json.dumps([tool["function"] for tool in TOOLS], indent=2),
        "datetime": "Jul 26 2024",
    },
}


def chat_cases(name: str) -> list[tuple]:
    """(case name, candidate message lists (the first that renders is kept), tools, add_generation_prompt, kwargs).

    Cases 1-7 exist for every template, `no_thinking` for Qwen3. Three extra tool-call cases give templates that reject
    case 6 a successful tool-call rendering too: a single call (Llama 3.x accepts only one), arguments as JSON strings
    (what the OpenAI wire format carries; some templates concatenate them as strings) and, for Mistral templates, the
    9-character alphanumeric call ids they require.
    """
    extra = TEMPLATE_KWARGS.get(name, {})
    hello = [{"role": "user", "content": "Hello, who are you?"}]
    cases = [
        ("user", [hello], None, True, {}),
        ("system_user", [[SYSTEM] + hello], None, True, {}),
        ("multi_turn", [MULTI_TURN], None, True, {}),
        ("multi_turn_no_gen", [MULTI_TURN + [{"role": "assistant", "content": "2 + 2 = 4."}]], None, False, {}),
        ("tools", [[SYSTEM, {"role": "user", "content": "What's the weather in Paris?"}]], TOOLS, True, {}),
        ("tool_call_roundtrip", [tool_call_messages(None), tool_call_messages("")], TOOLS, True, {}),
        (
            "unicode",
            [[{
                "role": "user",
                "content": "Grüße! 你好，世界 🌍👍🏽 café — “curly” and \"straight\" quotes, "
                "'single', a backslash \\ and a\nnew line.",
            }]],
            None,
            True,
            {},
        ),
    ]
    if name.startswith("qwen3"):
        cases.append(("no_thinking", [hello], None, True, {"enable_thinking": False}))
    cases.append(("tool_call_single", [tool_call_messages(None, calls=1), tool_call_messages("", calls=1)], TOOLS,
                  True, {}))
    cases.append(("tool_call_roundtrip_string_args",
                  [tool_call_messages(None, string_args=True), tool_call_messages("", string_args=True)], TOOLS,
                  True, {}))
    if "mistral" in name.lower():
        ids9 = ("call00001", "call00002")
        cases.append(("tool_call_roundtrip_id9", [tool_call_messages(None, ids=ids9), tool_call_messages("", ids=ids9)],
                      TOOLS, True, {}))
    return [(n, m, t, agp, {**extra, **kw}) for n, m, t, agp, kw in cases]


def freeze_strftime_now() -> None:
    """transformers' `strftime_now(fmt)` calls `datetime.now()` from chat_template_utils' module globals."""
    assert "strftime_now" in Path(chat_template_utils.__file__).read_text(encoding="utf-8")
    assert chat_template_utils.datetime is _dt.datetime, "chat_template_utils no longer imports datetime.datetime"

    class FrozenDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return FROZEN_NOW if tz is None else FROZEN_NOW.replace(tzinfo=tz)

    chat_template_utils.datetime = FrozenDatetime
    probe = render_template("{{ strftime_now('%Y-%m-%d %H:%M:%S / %d %b %Y') }}", [{"role": "user", "content": ""}],
                            None, False, {})
    assert probe == "2024-07-26 12:00:00 / 26 Jul 2024", probe


def normalize_messages(messages):
    fn = getattr(chat_template_utils, "_normalize_chat_messages", None)
    return fn(messages) if fn is not None else messages


def render_template(template: str, messages, tools, add_generation_prompt: bool, variables: dict) -> str:
    """What apply_chat_template(tokenize=False) renders, for when no tokenizer object is available."""
    result = chat_template_utils.render_jinja_template(
        conversations=[normalize_messages(messages)],
        tools=tools,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **variables,
    )
    rendered = result[0] if isinstance(result, tuple) else result
    return rendered[0]


def template_entries(data_dir: Path) -> list[dict]:
    entries = []
    tok_dir = data_dir / "tokenizers"
    for folder in sorted(p for p in tok_dir.iterdir() if p.is_dir()):
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        has_tokenizer = (folder / "tokenizer.json").exists()
        base = {"tokenizer": folder.name if has_tokenizer else None, "config": config}
        template = config.get("chat_template")
        if isinstance(template, list):
            named = {t["name"]: t["template"] for t in template}
            entries.append({**base, "name": folder.name, "template": named["default"], "template_key": "default",
                            "source": f"tokenizers/{folder.name}/tokenizer_config.json"})
            if "tool_use" in named:
                entries.append({**base, "name": f"{folder.name}-tool_use", "template": named["tool_use"],
                                "template_key": "tool_use",
                                "source": f"tokenizers/{folder.name}/tokenizer_config.json"})
        elif isinstance(template, str):
            entries.append({**base, "name": folder.name, "template": template, "template_key": None,
                            "source": f"tokenizers/{folder.name}/tokenizer_config.json"})
        elif (folder / "chat_template.jinja").exists():
            entries.append({**base, "name": folder.name,
                            "template": (folder / "chat_template.jinja").read_text(encoding="utf-8"),
                            "template_key": None, "source": f"tokenizers/{folder.name}/chat_template.jinja"})
        later = folder / "tokenizer_config.later-template.json"
        if later.exists():
            later_config = json.loads(later.read_text(encoding="utf-8"))
            entries.append({**base, "name": f"{folder.name}-later", "template": later_config["chat_template"],
                            "template_key": None, "source": f"tokenizers/{folder.name}/{later.name}"})
    for path in sorted((data_dir / "chat-templates").glob("*.jinja")):
        stem = path.stem
        tokenizer = TEMPLATE_TOKENIZER.get(stem)
        if tokenizer is None and stem not in TEMPLATE_ONLY_TOKENS:
            raise SystemExit(f"chat-templates/{path.name}: no tokenizer or special tokens known; add it to the tables")
        entries.append({"name": stem, "template": path.read_text(encoding="utf-8"), "template_key": None,
                        "source": f"chat-templates/{path.name}", "tokenizer": tokenizer, "config": None})
    return entries


def special_tokens_for(entry: dict, tok) -> dict:
    """The string variables apply_chat_template passes (tokenizer.special_tokens_map), null where absent."""
    if tok is not None:
        passed = dict(tok.special_tokens_map)
    elif entry["config"] is not None:  # tokenizer_config.json only (Gemma 3): named tokens + extra_special_tokens
        config = entry["config"]

        def content(value):
            return value["content"] if isinstance(value, dict) else value

        extra = config.get("extra_special_tokens")
        keys = NAMED_SPECIAL_TOKENS + (list(extra) if isinstance(extra, dict) else [])
        passed = {k: content(config[k]) for k in keys if isinstance(content(config.get(k)), str)}
    else:
        passed = dict(TEMPLATE_ONLY_TOKENS[entry["name"]])
    assert all(isinstance(v, str) for v in passed.values()), passed
    out = {k: None for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    out.update(passed)
    return out


def render_case(entry, tok, special, messages, tools, agp, kwargs):
    variables = {k: v for k, v in special.items() if v is not None}
    variables.update(kwargs)
    if tok is None:
        return render_template(entry["template"], messages, tools, agp, variables), None
    text = tok.apply_chat_template(messages, tools=tools, chat_template=entry["template"], add_generation_prompt=agp,
                                   tokenize=False, **kwargs)
    assert text == render_template(entry["template"], messages, tools, agp, variables)
    encoded = tok.apply_chat_template(messages, tools=tools, chat_template=entry["template"],
                                      add_generation_prompt=agp, tokenize=True, **kwargs)
    ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    assert ids == tok.encode(text, add_special_tokens=False)
    return text, ids


def error_message(exc: Exception) -> tuple[str, bool]:
    """(expected_error, raised by the template's raise_exception).

    A template's own raise_exception(msg) is recorded as msg alone. Anything else (a Python TypeError, jinja2's
    UndefinedError, ...) is recorded as "<exception class>: <message>": the template fails under Python, but the
    message, and for some templates the failure itself, is specific to Python's jinja2.
    """
    if type(exc) is jinja2.exceptions.TemplateError:
        return str(exc), True
    return f"{type(exc).__name__}: {exc}", False


def make_chat_fixture(entry: dict, tok, out_dir: Path) -> dict:
    special = special_tokens_for(entry, tok)
    fixture_cases, report = [], []
    for case_name, attempts, tools, agp, kwargs in chat_cases(entry["name"]):
        for attempt, msgs in enumerate(attempts):
            try:
                text, ids = render_case(entry, tok, special, msgs, tools, agp, kwargs)
                error, from_template = None, None
            except Exception as exc:  # noqa: BLE001 -- every template failure is a recorded case
                text, ids = None, None
                error, from_template = error_message(exc)
            if error is None or attempt == len(attempts) - 1:
                break
        fixture_cases.append({
            "name": case_name,
            "messages": msgs,
            "tools": tools,
            "add_generation_prompt": agp,
            "kwargs": kwargs,
            "expected_text": text,
            "expected_error": error,
            "expected_ids": ids,
        })
        if error is not None:
            report.append(f"{case_name}: {'[raise_exception] ' if from_template else ''}{error}")
    fixture = {
        "name": entry["name"],
        "template_source": entry["source"],
        "template_key": entry["template_key"],
        "tokenizer": entry["tokenizer"],
        "special_tokens": special,
        "now": FROZEN_NOW.isoformat(),
        "cases": fixture_cases,
    }
    write_json(out_dir / f"{entry['name']}.json", fixture)
    return {"ok": sum(c["expected_error"] is None for c in fixture_cases), "errors": report,
            "ids": tok is not None}


def make_chat_templates(data_dir: Path, cache: dict) -> dict:
    print("== chat templates")
    freeze_strftime_now()
    out_dir = FIXTURES / "chat_templates"
    reset_dir(out_dir)
    summary = {}
    for entry in template_entries(data_dir):
        tok = None
        if entry["tokenizer"] is not None:
            tok = cache.get(entry["tokenizer"])
            if tok is None:
                tok = cache[entry["tokenizer"]] = load_tokenizer(data_dir / "tokenizers" / entry["tokenizer"])
        summary[entry["name"]] = make_chat_fixture(entry, tok, out_dir)
    return summary


# --------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared",
                        help="shared data checkout with data/tokenizers and data/chat-templates (default: ../shared)")
    parser.add_argument("--only", nargs="+", choices=["models", "tokenizers", "chat_templates"],
                        default=["models", "tokenizers", "chat_templates"], help="which fixtures to regenerate")
    args = parser.parse_args()
    data_dir = (args.shared / "data").resolve()
    if not (data_dir / "tokenizers").is_dir():
        raise SystemExit(f"{data_dir}/tokenizers not found; pass --shared")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, jinja2 {jinja2.__version__}")

    cache: dict = {}
    model_stats = make_models() if "models" in args.only else {}
    tok_summary = make_tokenizers(data_dir / "tokenizers", cache) if "tokenizers" in args.only else {}
    chat_summary = make_chat_templates(data_dir, cache) if "chat_templates" in args.only else {}

    print("\n== summary")
    for name, s in model_stats.items():
        print(f"  model {name:20s} max |logit| {s['max_abs']:6.3f}  std {s['std']:.3f}  "
              f"min greedy gap {s['margin']:.4f}")
    for name, s in tok_summary.items():
        note = f"; AutoTokenizer ({s['auto_class']}) differs on {len(s['auto_diffs'])}" if s["auto_diffs"] else ""
        print(f"  tokenizer {name:34s} {s['cases']} cases{note}")
    if chat_summary:
        width = max(len(n) for n in chat_summary)
        print(f"  {'chat template':{width}s}  ok  error  ids")
        for name, s in chat_summary.items():
            print(f"  {name:{width}s}  {s['ok']:2d}  {len(s['errors']):5d}  {'yes' if s['ids'] else 'no'}")
            for line in s["errors"]:
                print(f"  {'':{width}s}      - {line[:150]}")


if __name__ == "__main__":
    sys.exit(main())
