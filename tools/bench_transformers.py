#!/usr/bin/env python3
"""The baseline for `tidal bench`: Hugging Face transformers' model of the config's family
(Qwen3MoeForCausalLM, DeepseekV2ForCausalLM, ...) with random weights, on the same shapes and
card, as a user would run it (eager PyTorch, the model's default attention and experts
implementations, a DynamicCache; DeepSeek's keeps expanded per-head keys and values, as
transformers' MLA does).

Measures what `tidal bench` measures:
  decode: one step of B sequences whose context (this step's token included) is CONTEXT, for each
          batch size; the cache holds CONTEXT - 1 random keys/values per layer and is cropped
          back after every step, so each timed step sees the same context;
  prefill: one sequence of PREFILL tokens from an empty cache, logits of the last token only.
Times are CUDA-synchronised wall clock, the median of the timed steps after warm-up ones.

  python3 tools/bench_transformers.py --config bench/configs/qwen3-30b-a3b.json \
      --num-layers 48 --json bench/transformers-h200.json
"""

import argparse
import datetime
import json
import statistics
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache


def timed(step, warm_up, iterations):
    for _ in range(warm_up):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--num-layers", type=int, default=0)
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--prefill-tokens", type=int, default=8192)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    with open(args.config) as f:
        fields = json.load(f)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    if args.num_layers:
        config.num_hidden_layers = args.num_layers
    torch.manual_seed(args.seed)
    torch.set_default_dtype(torch.bfloat16)
    started = time.perf_counter()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    torch.set_default_dtype(torch.float32)
    torch.cuda.synchronize()
    print(f"random weights: {config.num_hidden_layers} layers in "
          f"{time.perf_counter() - started:.1f} s", flush=True)

    layers = config.num_hidden_layers
    # What one token of one layer keeps in transformers' cache (per-head keys and values, or
    # DeepSeek's latent and rotary key in recent versions): read from a one-token step.
    probe = DynamicCache(config=config)
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device="cuda"), past_key_values=probe,
              use_cache=True, logits_to_keep=1)
    key_shape = tuple(probe.layers[0].keys.shape[1:])  # [heads, 1, dim]
    value_shape = tuple(probe.layers[0].values.shape[1:])
    del probe
    print(f"transformers caches keys {key_shape} and values {value_shape} per token and layer",
          flush=True)
    decode = []
    print(f"{'batch':>6} {'step ms':>10} {'tokens/s':>11}")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        cached = args.context - 1
        cache = DynamicCache(config=config)
        for layer in range(layers):
            cache.update(
                torch.randn((batch, key_shape[0], cached, key_shape[2]), device="cuda",
                            dtype=torch.bfloat16),
                torch.randn((batch, value_shape[0], cached, value_shape[2]), device="cuda",
                            dtype=torch.bfloat16), layer)
        ids = torch.randint(config.vocab_size, (batch, 1), device="cuda")
        positions = torch.full((batch, 1), cached, device="cuda")
        cache_position = torch.tensor([cached], device="cuda")

        def step():
            with torch.no_grad():
                model(input_ids=ids, position_ids=positions, cache_position=cache_position,
                      past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.crop(cached)

        try:
            seconds = timed(step, 2, args.iterations)
        except Exception as error:  # noqa: BLE001 - keep the other rows, say what failed
            print(f"batch {batch}: failed: {error!r}", flush=True)
            decode.append({"batch": batch, "context": args.context, "error": repr(error)})
            continue
        decode.append({"batch": batch, "context": args.context, "step_ms": seconds * 1e3,
                       "tokens_per_s": batch / seconds})
        print(f"{batch:6d} {seconds * 1e3:10.3f} {batch / seconds:11.0f}", flush=True)
        del cache
        torch.cuda.empty_cache()

    prefill = None
    if args.prefill_tokens:
        ids = torch.randint(config.vocab_size, (1, args.prefill_tokens), device="cuda")

        def prefill_step():
            with torch.no_grad():
                model(input_ids=ids, use_cache=False, logits_to_keep=1)

        try:
            seconds = timed(prefill_step, 1, max(1, min(args.iterations, 3)))
            prefill = {"tokens": args.prefill_tokens, "step_ms": seconds * 1e3,
                       "tokens_per_s": args.prefill_tokens / seconds}
            print(f"prefill of {args.prefill_tokens} tokens: {seconds * 1e3:.1f} ms, "
                  f"{args.prefill_tokens / seconds:.0f} tokens/s", flush=True)
        except Exception as error:  # noqa: BLE001 - still write the decode rows
            print(f"prefill: failed: {error!r}", flush=True)
            prefill = {"tokens": args.prefill_tokens, "error": repr(error)}

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "experts_implementation": getattr(config, "_experts_implementation", None),
        "config": args.config,
        "architecture": type(model).__name__,
        "num_layers": layers,
        "decode": decode,
        "prefill": prefill,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
