#!/usr/bin/env python3
"""Build the tiny MoE test fixtures and their reference outputs.

Families (--family, default qwen3-moe; `new` = the four after it, `all` = every one):
  qwen3-moe         tests/fixtures/tiny-qwen3-moe          Qwen3MoeForCausalLM
  qwen2-moe         tests/fixtures/tiny-qwen2-moe          Qwen2MoeForCausalLM (qkv bias, gated shared expert)
  mixtral           tests/fixtures/tiny-mixtral            MixtralForCausalLM (block_sparse_moe.*.w1/w2/w3)
  deepseek-v2-lite  tests/fixtures/tiny-deepseek-v2-lite   DeepseekV2ForCausalLM (MLA without q LoRA, greedy softmax)
  deepseek-v3       tests/fixtures/tiny-deepseek-v3        DeepseekV3ForCausalLM (MLA with q LoRA, YaRN, noaux_tc)
Each writes tests/fixtures/<name>/ (the checkpoint: HF layout, bf16, 2 shards) and
tests/fixtures/<name>.reference.json (greedy decodes + top-5 logprobs, fp32 compute). The
per-family parts (configs, tensor layout, router losses and margins) are in
tools/fixture_families.py; the independent forward used to cross-check the files is in
tools/fixture_plain_forward.py.

1. qwen3-moe trains a byte-level BPE (the Qwen2/Qwen3 tokenizer.json pipeline) on
   tools/fixture_corpus.txt and adds <|endoftext|> <|im_start|> <|im_end|> (special) and
   <think> </think> (not special) after the regular vocabulary, as Qwen does. The other
   families reuse that tokenizer: tokenizer.json, tokenizer_config.json and LICENSE are copied
   from tests/fixtures/tiny-qwen3-moe into each folder, so each folder is a standalone model.
2. Trains the tiny model (fp32, AdamW, fixed step count) on the tokenized corpus. Besides the
   LM loss it uses a per-layer load-balance loss (every expert gets used) and hinges on the
   gaps that decide the discrete routing choices (no near-ties): for softmax routers the
   router-logit gap between the k-th and (k+1)-th expert; for DeepSeek-V3's noaux_tc the
   sigmoid+bias selection-score gap at the k-th/(k+1)-th expert and the group-score gap at the
   topk_group boundary. Saves the weights as bf16 in 2 safetensors shards (DeepSeek-V3's
   e_score_correction_bias as F32, as published), checks the published tensor layout and that
   a reload by transformers 5 gives the logits of the trained (bf16-rounded) model.
3. Writes config.json in the published (transformers 4.x / hub) style, config.transformers5.json
   as transformers 5 writes it, generation_config.json, tokenizer_config.json (Qwen3 chat template).
4. Reloads the checkpoint as fp32 with transformers (eager attention) and greedy-decodes
   NEW_TOKENS tokens per prompt (qwen3-moe: with config.norm_topk_prob True and False). Every
   greedy step must have a top-1/top-2 logit gap > LOGIT_GAP_MIN and every (token, MoE layer)
   router gap (above) > ROUTER_GAP_MIN, so that an engine computing in fp32 with another
   summation order makes the same discrete choices. A prompt that fails is replaced by the next
   alternative of its slot; if a slot runs out, the model is retrained with the next seed
   (bounded). The new families also record the minimum margins, the expert usage and a
   config_summary (the numbers an implementer needs: softmax scale, YaRN factors, layouts).
5. Verifies the installed files: tokenizer round-trip, AutoTokenizer + chat template, tensor
   names / shapes / dtypes of the shards, a fresh transformers reload (default attention) of
   each config style (config.json and config.transformers5.json give identical logits), and an
   independent plain-torch forward reading only config.json and the shards, all against the
   recorded references.

Deterministic (fixed seeds, one CPU thread, fixed step counts); rerunning rewrites identical
files (given the same library versions). Takes about a minute per family on one CPU core.

Usage: /opt/fixenv/bin/python tools/make_fixture.py [--family F ...] [--qwen-tokenizer-dir DIR]
                                                    [--out-dir DIR]
"""

from __future__ import annotations

import os

# Keep every library on one thread (shared 2-core machine, and determinism).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

import fixture_families as fam
from fixture_families import MAX_POS, BALANCE_COEF, ROUTER_MARGIN_COEF
from fixture_plain_forward import MUTATIONS, PlainForward

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
QWEN3_NAME = "tiny-qwen3-moe"  # owner of the shared tokenizer
CORPUS_PATH = REPO / "tools" / "fixture_corpus.txt"
DEFAULT_QWEN_TOK_DIR = Path("/work/shared/tokenizers/qwen3")

# ---------------------------------------------------------------- tokenizer
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BPE_VOCAB = 1531  # + 5 added tokens = 1536
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
NONSPECIAL_ADDED = ["<think>", "</think>"]

# ---------------------------------------------------------------- training
TRAIN_STEPS = 600
SEQ_LEN = 96
BATCH = 12
LR = 4e-3
WARMUP = 30
WEIGHT_DECAY = 0.01
# BALANCE_COEF (per-layer load balance, so that every expert gets exercised) and the router
# margin hinges (fixture_families): without the hinges the routers of a briefly trained tiny
# model are near-uniform and ~0.5% of tokens have nearly tied experts, which would make the
# fixture fragile under fp32 reordering.

# ---------------------------------------------------------------- references
NEW_TOKENS = 32
TOP_N = 5
LOGIT_GAP_MIN = 1e-3
ROUTER_GAP_MIN = 1e-4
LONG_PROMPT_TOKENS = 150

LONG_SOURCES = [
    "The history of computing began long before electronic machines. People used the abacus, "
    "tables of logarithms and mechanical calculators to do arithmetic, and clerks spent whole days "
    "adding long columns of numbers by hand. In the twentieth century engineers built machines with "
    "relays, then with vacuum tubes, and then with transistors, and each new machine was smaller, "
    "faster and cheaper than the one before. The first programs were written by setting switches and "
    "plugging cables into large boards. Later came punched cards, then keyboards and screens, and "
    "finally languages that let a person write a loop or a function in a few short lines. Today a "
    "small phone holds more computing power than a whole room of early machines, and it fits in a "
    "pocket next to the keys and a little money for the bus.",
    "Travel notes, day one: we arrived in the evening and found a small hotel near the harbour. The "
    "owner gave us a room with a balcony, and from there we could see the boats coming back with the "
    "day's catch. Day two: we walked along the coast to the lighthouse and ate fish soup in a tiny "
    "restaurant where the cook sang while he worked. Day three: it rained all day, so we visited the "
    "museum, the old cathedral and a shop that sold nothing but maps. Day four: the sun came back, "
    "and we took the boat to the island and swam in the clear water until the evening. Day five: we "
    "packed our bags, bought some postcards, and caught the night train home, tired and happy.",
    "The garden behind the house was small, but it was full of life from March until November. There "
    "were roses by the gate, tomatoes along the fence, beans climbing on tall sticks, and a pear tree "
    "in the corner that was older than anyone in the family. Bees moved from flower to flower all "
    "morning, and a blackbird sang from the roof every evening as the light turned gold. In August the "
    "pears were ripe, and the whole family picked them in one long afternoon, filling baskets, bowls "
    "and even a wheelbarrow. Grandmother made jam, the children ate pears until they could eat no "
    "more, and the rest were wrapped in paper and stored in the cool cellar for the winter.",
]


def prompt_slots() -> list[dict]:
    """Each slot needs one passing prompt; alternatives are tried in order."""
    chat = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    sys_chat = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
    return [
        {"name": "short", "max_tokens": 2,
         "alts": ["The", "Once", "Hello", "A", "In", "Water"]},
        {"name": "long", "long": True, "alts": LONG_SOURCES},
        {"name": "newline_run",
         "alts": ["Line one of a poem,\n\n\n\nand line",
                  "Two blank lines came before this sentence.\n\n\n\n\nThe",
                  "Rules for a tidy kitchen:\n\n\n- wash the",
                  "First paragraph.\n\n\n\nSecond paragraph:"]},
        {"name": "non_ascii",
         "alts": ["Chinese: 你好，世界！今天天气",
                  "Russian: Привет! Как дела? Москва",
                  "Symbols: café, naïve, Zürich, São Paulo and",
                  "Japanese: こんにちは、世界。東京は",
                  "Greek: Καλημέρα! Η Αθήνα"]},
        {"name": "chat",
         "alts": [chat.format("What is the capital of Italy?"),
                  chat.format("Hello! Who are you?"),
                  chat.format("How many legs does a spider have?"),
                  chat.format("Tell me a short story.")]},
        {"name": "chat_system_think",
         "alts": [sys_chat.format("What is two plus two?") + "<think>\n",
                  sys_chat.format("Give me a recipe for bread.") + "<think>\n",
                  sys_chat.format("What is water made of?") + "<think>\n"]},
        {"name": "code",
         "alts": ["def fibonacci(n):\n    a, b = 0, 1\n",
                  "#include <vector>\n\nint main() {\n    ",
                  "class Stack:\n    def __init__(self):\n",
                  "for i in range(10):\n    print("]},
        {"name": "digits_punct",
         "alts": ["The invoice total was $1,234.56, due on 2024-",
                  "7 * 8 = 56\n9 * 9 = ",
                  "Call 555-0123 before 18:00, or write to",
                  "The first primes are 2, 3, 5, 7, 11,"]},
        {"name": "prose",
         "alts": ["The lighthouse keeper woke before dawn, and",
                  "Once upon a time there was a",
                  "The river runs through the middle of the old town",
                  "She opened the letter slowly, because"]},
        {"name": "whitespace",
         "alts": ["\tA line that starts with a tab.\n    A line",
                  "Multiple   spaces   inside   a   line.   ",
                  "    return a + b\n\n\n"]},
    ]


# ============================================================================ utils
def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj, indent=2) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


# ============================================================================ tokenizer
def pipeline_sections() -> dict:
    """The normalizer / pre-tokenizer / post-processor / decoder of Qwen3's tokenizer.json."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_SPLIT_PATTERN}, "behavior": "Isolated",
             "invert": False},
            dict(byte_level),
        ]},
        "post_processor": dict(byte_level),
        "decoder": dict(byte_level),
    }


def build_tokenizer(corpus: str, qwen_tok_dir: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)

    # Train on the corpus with the special markers removed so that no merges are learned
    # from their pieces; the markers are added afterwards as atomic added tokens, which
    # puts them after the regular vocabulary as in Qwen's tokenizer.
    plain = corpus
    for t in SPECIAL_TOKENS + NONSPECIAL_ADDED:
        plain = plain.replace(t, "\n")
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator([plain], trainer=trainer)
    n_bpe = tok.get_vocab_size(with_added_tokens=False)
    if n_bpe != BPE_VOCAB:
        raise SystemExit(f"BPE training produced {n_bpe} tokens, wanted {BPE_VOCAB}: corpus too small?")

    tok.add_special_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False,
                                       normalized=False, special=True) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False,
                               normalized=False, special=False) for t in NONSPECIAL_ADDED])

    # Pin the pipeline sections to exactly Qwen's serialized form.
    data = json.loads(tok.to_str())
    data.update(pipeline_sections())
    data["model"].update({"dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                          "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                          "ignore_merges": False})
    tok = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))

    qwen_json = qwen_tok_dir / "tokenizer.json"
    if qwen_json.exists():
        q = json.loads(qwen_json.read_text(encoding="utf-8"))
        mine = json.loads(tok.to_str())
        for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            if q[key] != mine[key]:
                raise SystemExit(f"tokenizer {key} differs from Qwen3's:\n{q[key]}\n{mine[key]}")
        for key in ("type", "dropout", "unk_token", "continuing_subword_prefix",
                    "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges"):
            if q["model"][key] != mine["model"][key]:
                raise SystemExit(f"tokenizer model.{key} differs from Qwen3's: "
                                 f"{q['model'][key]!r} vs {mine['model'][key]!r}")
    return tok


def tokenizer_config(tok: Tokenizer, qwen_tok_dir: Path) -> dict:
    q = json.loads((qwen_tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    decoder = {}
    for t in SPECIAL_TOKENS + NONSPECIAL_ADDED:
        decoder[str(tok.token_to_id(t))] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": t in SPECIAL_TOKENS,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": q["chat_template"],
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MAX_POS,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }




# ============================================================================ model
def train_model(family, config, data: torch.Tensor, seed: int):
    torch.manual_seed(seed)
    model = family.model_class(config).float()
    family.prepare_model(model, seed)
    model.config._attn_implementation = "eager"
    model.train()
    gates = family.moe_gates(model)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(seed + 1)
    n_windows = data.numel() - SEQ_LEN - 1
    t0 = time.time()
    losses = []
    for step in range(TRAIN_STEPS):
        lr = LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / TRAIN_STEPS))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, n_windows, (BATCH,), generator=gen)
        batch = torch.stack([data[s:s + SEQ_LEN + 1] for s in starts.tolist()])
        out = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone(),
                    output_router_logits=True)
        # Where the class adds its own balance loss (Qwen, Mixtral: out.loss = CE +
        # router_aux_loss_coef * aux_loss), take it out again: the HF loss pools all layers, so
        # each layer can still collapse onto its own pair of experts. The per-layer balance loss
        # and the router-margin hinges come from the family.
        if getattr(out, "aux_loss", None) is not None:
            ce = out.loss - config.router_aux_loss_coef * out.aux_loss
        else:
            ce = out.loss
        if len(out.router_logits) != len(gates):
            raise SystemExit(f"{len(out.router_logits)} router outputs for {len(gates)} MoE layers")
        balance, hinge = family.routing.router_losses(gates, out.router_logits)
        loss = ce + BALANCE_COEF * balance + ROUTER_MARGIN_COEF * hinge
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(ce.item())
        if step % 100 == 0 or step == TRAIN_STEPS - 1:
            log(f"  step {step:4d}  loss {np.mean(losses[-20:]):.3f}  balance {balance.item():.3f}"
                f"  margin {hinge.item():.3f}"
                f"  lr {lr:.2e}  {time.time() - t0:.0f}s")
    model.eval()
    return model, float(np.mean(losses[-20:])), time.time() - t0


# ============================================================================ checkpoint
SHARD_FILES = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
DTYPE_BYTES = {"BF16": 2, "F32": 4}


def check_shards(family, model_dir: Path, vocab: int) -> tuple[dict, int]:
    """Tensor names, shapes and dtypes of the two shards against the published layout; the
    index must map each tensor to its shard. Returns (weight_map as found, total bytes)."""
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    expected = family.expected_tensor_shapes(vocab)
    seen = {}
    total_bytes = 0
    for shard in SHARD_FILES:
        with safe_open(str(model_dir / shard), "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                want_dtype = family.tensor_dtypes.get(k, "BF16")
                if sl.get_dtype() != want_dtype:
                    raise SystemExit(f"{k}: dtype {sl.get_dtype()}, expected {want_dtype}")
                seen[k] = (shard, list(sl.get_shape()))
                total_bytes += math.prod(sl.get_shape()) * DTYPE_BYTES[want_dtype]
    missing = sorted(set(expected) - set(seen))
    extra = sorted(set(seen) - set(expected))
    if missing or extra:
        raise SystemExit("checkpoint tensor names are not the published layout:\n"
                         f"  missing: {missing[:12]}{' ...' if len(missing) > 12 else ''}\n"
                         f"  unexpected: {extra[:12]}{' ...' if len(extra) > 12 else ''}")
    for k, shape in expected.items():
        if seen[k][1] != shape:
            raise SystemExit(f"{k}: shape {seen[k][1]}, expected {shape}")
        if index["weight_map"].get(k) != seen[k][0]:
            raise SystemExit(f"index weight_map[{k}] = {index['weight_map'].get(k)}, "
                             f"tensor is in {seen[k][0]}")
    if len(index["weight_map"]) != len(expected):
        raise SystemExit("index weight_map has extra entries")
    if index["metadata"].get("total_size") != total_bytes:
        raise SystemExit(f"index total_size {index['metadata'].get('total_size')} != {total_bytes}")
    return index["weight_map"], total_bytes


def roundtrip_probe_ids(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(99)
    return torch.randint(0, vocab, (1, 200), generator=g)


def save_checkpoint(family, model, stage: Path, vocab: int) -> dict:
    """save_pretrained as bf16 into 2 shards; verify layout and that transformers reloads the
    saved names into the same model; return the transformers-5 config."""
    model = model.to(torch.bfloat16)
    family.before_save(model)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    tmp = stage / "_save"
    model.save_pretrained(tmp, max_shard_size=int(total * 0.6), safe_serialization=True)
    model.to(torch.float32)

    files = sorted(p.name for p in tmp.iterdir())
    want_files = ["config.json", "generation_config.json", *SHARD_FILES, "model.safetensors.index.json"]
    if files != want_files:
        raise SystemExit(f"save_pretrained wrote {files}, expected {want_files}")
    weight_map, total_bytes = check_shards(family, tmp, vocab)

    # the saved (published) names must load back into the same model: same logits as the
    # trained model rounded to bf16, both in fp32 (a fresh module for the trained weights: the
    # bf16 round trip above also rounded the non-persistent RoPE inv_freq buffers)
    with torch.no_grad(), torch.random.fork_rng():
        trained = family.model_class(model.config).float().eval()
        trained.load_state_dict(model.state_dict())
        probe = roundtrip_probe_ids(vocab)
        want = trained(input_ids=probe).logits
        del trained
        back = load_fp32(tmp)
        family.check_loaded(back, "default")
        got = back(input_ids=probe).logits
        del back
    diff = (want - got).abs().max().item()
    if diff > 1e-5:
        raise SystemExit(f"reload of the saved names differs from the trained model by {diff:.3g}")
    log(f"  saved {len(weight_map)} tensors, {total_bytes:,} B; transformers reload of the saved "
        f"names matches the trained model (max |dlogit| {diff:.2e})")

    for shard in SHARD_FILES:
        shutil.move(str(tmp / shard), str(stage / shard))
    # the standard index form: {"metadata": {"total_size": N}, "weight_map": {...}}
    write_json(stage / "model.safetensors.index.json",
               {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))})

    cfg5 = json.loads((tmp / "config.json").read_text())
    shutil.rmtree(tmp)
    return cfg5


def write_configs(family, stage: Path, cfg5: dict, vocab: int, ids: dict) -> dict:
    if cfg5.get("dtype") != "bfloat16":
        log(f"  note: save_pretrained wrote dtype={cfg5.get('dtype')!r}; setting bfloat16")
        cfg5["dtype"] = "bfloat16"
    cfg4 = family.published_config(vocab, ids)
    # every field of the 5.x file must be the published value, or (renamed / derived by
    # transformers 5) the value the family expects
    expected5 = family.cfg5_expected(cfg4)
    for k, v in cfg5.items():
        if k == "transformers_version":
            continue
        if k in expected5:
            want = expected5[k]
        elif k in cfg4:
            want = cfg4[k]
        else:
            raise SystemExit(f"published config lacks field {k!r} of the transformers-5 config")
        if v != want:
            raise SystemExit(f"transformers-5 config {k} = {v!r}, expected {want!r}")
    write_json(stage / "config.transformers5.json", cfg5)
    write_json(stage / "config.json", cfg4)

    write_json(stage / "generation_config.json", {
        "bos_token_id": None,
        "do_sample": True,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.51.0",
    })
    return cfg4


# ============================================================================ references
class RouterProbe:
    """Forward hooks on every MoE router: the minimum of each routing gap of the family
    (softmax: k-th minus (k+1)-th probability; V3: also the group-score gap)."""

    def __init__(self, family, model):
        self.family = family
        self.handles = []
        self.kinds = family.routing.gap_kinds
        self.reset()
        gates = {}
        for i, layer in enumerate(model.model.layers):
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None and hasattr(gate, "top_k"):
                gates[i] = gate
                self.handles.append(gate.register_forward_hook(self._hook(i)))
        if sorted(gates) != list(family.moe_layers):
            raise SystemExit(f"found routers in layers {sorted(gates)}, expected {family.moe_layers}")

    def _hook(self, layer):
        def fn(module, _inputs, output):
            logits = output[0] if isinstance(output, tuple) else output
            for kind, gaps in self.family.routing.gaps(module, logits).items():
                g, pos = torch.min(gaps, dim=0)
                self.n_checked[(kind, layer)] = gaps.numel()  # last forward covers every position
                if g.item() < self.min_gap[kind]:
                    self.min_gap[kind] = g.item()
                    self.where[kind] = (layer, int(pos))
        return fn

    def reset(self):
        self.min_gap = {k: math.inf for k in self.kinds}
        self.where = {k: None for k in self.kinds}
        self.n_checked = {}

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def greedy_reference(model, probe: RouterProbe, ids: list[int]) -> dict:
    probe.reset()
    seq = list(ids)
    out_ids, tops, min_logit_gap = [], [], math.inf
    for step in range(NEW_TOKENS):
        logits = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        lp = torch.log_softmax(logits, dim=-1)
        top2 = torch.topk(logits, 2).values
        min_logit_gap = min(min_logit_gap, (top2[0] - top2[1]).item())
        v, i = torch.topk(lp, TOP_N)
        tops.append([[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())])
        nxt = int(i[0])
        out_ids.append(nxt)
        seq.append(nxt)
    checked = {}
    for (kind, _layer), n in probe.n_checked.items():
        checked[kind] = checked.get(kind, 0) + n
    return {"greedy_token_ids": out_ids, "top_logprobs": tops, "min_logit_gap": min_logit_gap,
            "router_gaps": dict(probe.min_gap), "router_where": dict(probe.where),
            "router_checked": checked}


def load_fp32(model_dir: Path, **overrides):
    m = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager", **overrides)
    m.eval()
    return m


def make_long_prompt(tok: Tokenizer, source: str) -> str:
    words = source.split(" ")
    text = ""
    for n in range(1, len(words) + 1):
        text = " ".join(words[:n])
        if len(tok.encode(text, add_special_tokens=False).ids) >= LONG_PROMPT_TOKENS:
            return text
    raise SystemExit(f"long prompt source too short ({len(tok.encode(text).ids)} tokens)")


def compute_references(family, stage: Path, tok: Tokenizer) -> tuple[dict, dict] | None:
    """Returns (variants, stats) or None if some slot has no passing prompt."""
    models_ = {vname: load_fp32(stage, **ov) for vname, ov in family.variants.items()}
    for vname, m in models_.items():
        family.check_loaded(m, vname)
    probes = {k: RouterProbe(family, m) for k, m in models_.items()}

    variants = {k: {"prompts": []} for k in models_}
    stats = {"min_logit_gap": math.inf, "router_gaps": {k: math.inf for k in family.routing.gap_kinds},
             "router_checks": {}, "chosen": []}
    for slot in prompt_slots():
        chosen = None
        for alt_i, alt in enumerate(slot["alts"]):
            text = make_long_prompt(tok, alt) if slot.get("long") else alt
            ids = tok.encode(text, add_special_tokens=False).ids
            if "max_tokens" in slot and len(ids) > slot["max_tokens"]:
                log(f"  [{slot['name']}] alt {alt_i}: {len(ids)} tokens > {slot['max_tokens']}, skip")
                continue
            results, ok = {}, True
            for vname, m in models_.items():
                r = greedy_reference(m, probes[vname], ids)
                if r["min_logit_gap"] <= LOGIT_GAP_MIN:
                    log(f"  [{slot['name']}] alt {alt_i} ({vname}): FAILED logit-gap check, "
                        f"top1-top2 = {r['min_logit_gap']:.3g} <= {LOGIT_GAP_MIN}")
                    ok = False
                    break
                bad = [k for k, g in r["router_gaps"].items() if g <= ROUTER_GAP_MIN]
                if bad:
                    k = bad[0]
                    log(f"  [{slot['name']}] alt {alt_i} ({vname}): FAILED {k}-gap check, "
                        f"gap = {r['router_gaps'][k]:.3g} <= {ROUTER_GAP_MIN} "
                        f"at (layer, token) {r['router_where'][k]}")
                    ok = False
                    break
                results[vname] = r
            if ok:
                chosen = (text, ids, results)
                break
        if chosen is None:
            log(f"  slot {slot['name']!r}: no alternative passes the checks")
            for p in probes.values():
                p.remove()
            return None
        text, ids, results = chosen
        for vname, r in results.items():
            variants[vname]["prompts"].append({
                "text": text, "prompt_token_ids": ids,
                "greedy_token_ids": r["greedy_token_ids"], "top_logprobs": r["top_logprobs"]})
            stats["min_logit_gap"] = min(stats["min_logit_gap"], r["min_logit_gap"])
            for k, g in r["router_gaps"].items():
                stats["router_gaps"][k] = min(stats["router_gaps"][k], g)
            for k, n in r["router_checked"].items():
                stats["router_checks"][k] = stats["router_checks"].get(k, 0) + n
        stats["chosen"].append((slot["name"], text, len(ids),
                                tok.decode(results["default"]["greedy_token_ids"],
                                           skip_special_tokens=False),
                                min(r["min_logit_gap"] for r in results.values()),
                                {k: min(r["router_gaps"][k] for r in results.values())
                                 for k in family.routing.gap_kinds}))
    for p in probes.values():
        p.remove()
    stats["expert_usage"] = expert_usage(family, models_["default"], [
        p["prompt_token_ids"] + p["greedy_token_ids"][:-1] for p in variants["default"]["prompts"]])
    if family.extended_reference:
        stats["config_summary"] = family.config_summary(models_["default"],
                                                        json.loads((stage / "config.json").read_text()))
    return variants, stats


@torch.no_grad()
def expert_usage(family, model, seqs: list[list[int]]) -> dict[int, list[int]]:
    """How often each expert of each MoE layer is selected over the reference sequences."""
    counts = {}
    handles = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is None or not hasattr(gate, "top_k"):
            continue
        counts[i] = [0] * family.experts

        def fn(_m, _inp, out, i=i):
            for e in out[2].flatten().tolist():
                counts[i][e] += 1
        handles.append(gate.register_forward_hook(fn))
    for seq in seqs:
        model(input_ids=torch.tensor([seq]))
    for h in handles:
        h.remove()
    return counts


# ============================================================================ verification
@torch.no_grad()
def verify(family, out_dir: Path, ref: dict, corpus: str, vocab: int) -> dict:
    """Reload the final files the way a user would and compare against the references."""
    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    samples = [p["text"] for p in ref["variants"]["default"]["prompts"]] + corpus.splitlines()
    for s in samples:
        enc = tok.encode(s, add_special_tokens=False)
        if tok.decode(enc.ids, skip_special_tokens=False) != s:
            raise SystemExit(f"tokenizer round-trip failed for {s!r}")
    for p in ref["variants"]["default"]["prompts"]:
        if tok.encode(p["text"], add_special_tokens=False).ids != p["prompt_token_ids"]:
            raise SystemExit(f"tokenization of {p['text']!r} is not reproducible")

    # transformers' own tokenizer class on the same files should agree
    ht = transformers.AutoTokenizer.from_pretrained(str(out_dir))
    for p in ref["variants"]["default"]["prompts"]:
        got = ht(p["text"], add_special_tokens=False)["input_ids"]
        if got != p["prompt_token_ids"]:
            raise SystemExit(f"AutoTokenizer disagrees on {p['text']!r}: {got}")
    msgs = [{"role": "user", "content": "What is the capital of Italy?"}]
    rendered = ht.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    want = "<|im_start|>user\nWhat is the capital of Italy?<|im_end|>\n<|im_start|>assistant\n"
    if rendered != want:
        raise SystemExit(f"chat template rendered {rendered!r}")
    if ht.eos_token != "<|im_end|>" or ht.pad_token != "<|endoftext|>" or ht.bos_token is not None:
        raise SystemExit("tokenizer_config special tokens wrong")

    # the shards as installed: published names, shapes, dtypes, index
    check_shards(family, out_dir, vocab)

    def compare(logits_fn, vname, what):
        worst = 0.0
        for p in ref["variants"][vname]["prompts"]:
            seq = p["prompt_token_ids"] + p["greedy_token_ids"]
            lp = torch.log_softmax(logits_fn(seq).float(), dim=-1)
            n0 = len(p["prompt_token_ids"])
            for step, top in enumerate(p["top_logprobs"]):
                row = lp[n0 - 1 + step]
                if int(torch.argmax(row)) != p["greedy_token_ids"][step]:
                    raise SystemExit(f"{vname}: {what} greedy mismatch at step {step}")
                for tid, val in top:
                    worst = max(worst, abs(row[tid].item() - val))
        if worst > 1e-4:
            raise SystemExit(f"{vname}: {what} logprobs differ from the references by {worst:.3g}")
        return worst

    worst = worst_cfg5 = worst_plain = 0.0
    diverging, routed = {}, 0
    with tempfile.TemporaryDirectory() as td:
        cfg5_dir = Path(td) / "cfg5"
        fam.copy_tree_with_config(out_dir, cfg5_dir, "config.transformers5.json")
        for vname, overrides in family.variants.items():
            # default attention implementation on purpose (not the eager one used to record)
            m = transformers.AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32,
                                                                  **overrides).eval()
            family.check_loaded(m, vname)
            worst = max(worst, compare(lambda s, m=m: m(input_ids=torch.tensor([s])).logits[0], vname,
                                       "reloaded model"))
            # the transformers-5 config style must give the same model
            m4 = load_fp32(out_dir, **overrides)
            m5 = load_fp32(cfg5_dir, **overrides)
            family.check_loaded(m5, vname)
            for p in ref["variants"][vname]["prompts"]:
                ids = torch.tensor([p["prompt_token_ids"] + p["greedy_token_ids"]])
                worst_cfg5 = max(worst_cfg5, (m4(input_ids=ids).logits - m5(input_ids=ids).logits)
                                 .abs().max().item())
            del m, m4, m5
    if worst_cfg5 > 1e-6:
        raise SystemExit(f"config.json and config.transformers5.json give logits {worst_cfg5:.3g} apart")

    for vname, overrides in family.variants.items():
        plain = PlainForward(out_dir, overrides)
        worst_plain = max(worst_plain, compare(plain.logits, vname, "independent forward"))
        for k, n in plain.diverging.items():
            diverging[k] = diverging.get(k, 0) + n
        routed += plain.routed_choices
    log(f"verify: tokenizer round-trips {len(samples)} strings; AutoTokenizer and chat template "
        f"agree; shard names/shapes/dtypes are the published layout; reloaded model "
        f"(full-sequence, default attn) logprobs match to {worst:.2e}; config.transformers5.json "
        f"loads to the same logits (max diff {worst_cfg5:.1e}); independent forward from "
        f"config.json + shards matches to {worst_plain:.2e}")
    extra = {}
    if family.mutations:
        extra["sensitivity"] = sensitivity(family, out_dir, ref)
    if diverging:
        for k, n in diverging.items():
            log(f"  noaux_tc: {n} of {routed} (token, layer) expert choices differ with {k}")
        extra["alternative_rules"] = {"routed_choices": routed, "differing": diverging}
    return extra


@torch.no_grad()
def sensitivity(family, out_dir: Path, ref: dict) -> dict:
    """How far each deliberate mistake (fixture_plain_forward.MUTATIONS) moves the reference
    logprobs (max |d logprob| over the recorded top-5) and how many greedy steps it changes:
    a fixture that the mistake leaves within tolerance would not catch it."""
    out = {}
    for mname in family.mutations:
        plain = PlainForward(out_dir, mutations=[mname])
        worst, changed, steps = 0.0, 0, 0
        for p in ref["variants"]["default"]["prompts"]:
            seq = p["prompt_token_ids"] + p["greedy_token_ids"]
            lp = torch.log_softmax(plain.logits(seq), dim=-1)
            n0 = len(p["prompt_token_ids"])
            for step, top in enumerate(p["top_logprobs"]):
                row = lp[n0 - 1 + step]
                changed += int(torch.argmax(row)) != p["greedy_token_ids"][step]
                steps += 1
                worst = max(worst, max(abs(row[tid].item() - val) for tid, val in top))
        out[mname] = {"mistake": MUTATIONS[mname], "max_abs_logprob_diff": round(worst, 4),
                      "greedy_steps_changed": changed, "of_steps": steps}
        log(f"  mistake {mname}: max |d logprob| {worst:.3g}, {changed}/{steps} greedy steps change")
    return out


# ============================================================================ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--family", nargs="+", default=["qwen3-moe"],
                    choices=list(fam.FAMILIES) + ["new", "all"],
                    help="which fixtures to build (default qwen3-moe; new = the four others)")
    ap.add_argument("--qwen-tokenizer-dir", type=Path, default=DEFAULT_QWEN_TOK_DIR,
                    help="dir with Qwen3's tokenizer_config.json (chat template) and LICENSE "
                         "(qwen3-moe only)")
    ap.add_argument("--out-dir", type=Path, default=FIXTURES,
                    help="fixtures root to write into (default tests/fixtures)")
    ap.add_argument("--train-steps", type=int, default=TRAIN_STEPS,
                    help="for debugging the script only: the fixtures use the default")
    args = ap.parse_args()
    globals()["TRAIN_STEPS"] = args.train_steps
    keys = []
    for k in args.family:
        for kk in (list(fam.FAMILIES) if k == "all" else fam.NEW_FAMILIES if k == "new" else [k]):
            if kk not in keys:
                keys.append(kk)

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    corpus = CORPUS_PATH.read_text(encoding="utf-8")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    timings = []
    for key in keys:
        t0 = time.time()
        build_family(fam.FAMILIES[key](), corpus, args)
        timings.append((key, time.time() - t0))
    for key, s in timings:
        log(f"{key}: {s:.0f}s")


def shared_tokenizer_source(out_root: Path) -> Path:
    d = out_root / QWEN3_NAME
    return d if (d / "tokenizer.json").exists() else FIXTURES / QWEN3_NAME


def build_family(family, corpus: str, args) -> None:
    t_start = time.time()
    log(f"==== {family.name} ({family.arch})")
    out_dir = args.out_dir / family.name
    ref_path = args.out_dir / f"{family.name}.reference.json"

    log("== tokenizer")
    if isinstance(family, fam.Qwen3Moe):
        for f in ("tokenizer_config.json", "LICENSE"):
            if not (args.qwen_tokenizer_dir / f).exists():
                raise SystemExit(f"missing {args.qwen_tokenizer_dir / f}")
        tok = build_tokenizer(corpus, args.qwen_tokenizer_dir)
        tok_files = None
    else:
        src = shared_tokenizer_source(args.out_dir)
        tok = Tokenizer.from_file(str(src / "tokenizer.json"))
        tok_files = {f: src / f for f in ("tokenizer.json", "tokenizer_config.json", "LICENSE")}
        log(f"  reusing {src.relative_to(REPO) if src.is_relative_to(REPO) else src}/tokenizer.json")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + NONSPECIAL_ADDED}
    log(f"  vocab {vocab} (BPE {BPE_VOCAB} + 5 added): {ids}")
    data = torch.tensor(tok.encode(corpus, add_special_tokens=False).ids, dtype=torch.long)
    log(f"  corpus: {len(corpus)} chars, {len(corpus.splitlines())} lines, {data.numel()} tokens")

    stage = args.out_dir / f".{family.name}.staging"
    try:
        seed, final_loss, variants, stats = build_and_check(family, stage, out_dir, tok, tok_files,
                                                            vocab, ids, data, args)
    finally:
        if stage.exists():
            shutil.rmtree(stage)

    ref = {"model_dir": family.name, "dtype_compute": "float32",
           "transformers_version": transformers.__version__, "torch_version": torch.__version__}
    if family.extended_reference:
        ref["config_summary"] = stats["config_summary"]
        ref["margins"] = {
            "min_logit_gap": stats["min_logit_gap"],
            "logit_gap_threshold": LOGIT_GAP_MIN,
            **{f"min_{k}_gap": g for k, g in stats["router_gaps"].items()},
            "router_gap_threshold": ROUTER_GAP_MIN,
            "router_gap_definition": router_gap_definition(family),
            "checks": stats["router_checks"],
            "seed": seed,
        }
        ref["expert_selections"] = {str(k): v for k, v in stats["expert_usage"].items()}
    ref["variants"] = variants

    log("== verify")
    extra = verify(family, out_dir, ref, corpus, vocab)
    if "sensitivity" in extra:
        ref["sensitivity"] = extra["sensitivity"]
    if family.extended_reference and "alternative_rules" in extra:
        ref["config_summary"]["noaux_tc_alternative_rules"] = {
            **extra["alternative_rules"],
            "note": "(token, layer) expert choices over the reference sequences (prompt + greedy "
                    "tokens) whose expert set would differ under each rule instead of the one "
                    "used (transformers; DeepSeek-V3 inference/model.py); 'groups masked to 0.0' "
                    "is what modeling_deepseek.py on the hub does"}
    ref["variants"] = ref.pop("variants")  # last, after the summaries
    ref_path.write_text(json.dumps(ref, ensure_ascii=False, separators=(",", ":")) + "\n",
                        encoding="utf-8")
    summary(family, out_dir, ref_path, seed, final_loss, vocab, stats, t_start)


def router_gap_definition(family) -> dict:
    if isinstance(family.routing, fam.SigmoidGroupRouting):
        return {"router": "k-th minus (k+1)-th selection score sigmoid(logit) + e_score_correction_bias "
                          "among the experts of the kept groups",
                "group": "topk_group-th minus (topk_group+1)-th group score (sum of the group's 2 "
                         "largest selection scores)"}
    return {"router": "k-th minus (k+1)-th softmax probability"}


def build_and_check(family, stage: Path, out_dir: Path, tok: Tokenizer, tok_files, vocab: int,
                    ids: dict, data: torch.Tensor, args):
    """Train / save / record references until the checks pass; install into out_dir."""
    result = None
    for attempt, seed in enumerate(family.seeds):
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir()
        log(f"== model (attempt {attempt + 1}/{len(family.seeds)}, seed {seed})")
        config = family.make_config(vocab, ids)
        model, final_loss, train_s = train_model(family, config, data, seed)
        log(f"  trained {TRAIN_STEPS} steps in {train_s:.0f}s, final loss {final_loss:.3f}")
        cfg5 = save_checkpoint(family, model, stage, vocab)
        del model
        write_configs(family, stage, cfg5, vocab, ids)
        if tok_files is None:
            tok.save(str(stage / "tokenizer.json"), pretty=True)
            write_json(stage / "tokenizer_config.json", tokenizer_config(tok, args.qwen_tokenizer_dir))
            shutil.copyfile(args.qwen_tokenizer_dir / "LICENSE", stage / "LICENSE")
        else:
            for name, src in tok_files.items():
                shutil.copyfile(src, stage / name)

        log("== references")
        result = compute_references(family, stage, tok)
        if result is not None:
            break
        log(f"  seed {seed} rejected; retrying with the next seed")
    if result is None:
        raise SystemExit("no seed produced a model that passes the robustness checks")
    variants, stats = result
    for f in stage.iterdir():
        f.chmod(0o644)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    stage.rename(out_dir)
    return seed, final_loss, variants, stats


def summary(family, out_dir, ref_path, seed, final_loss, vocab, stats, t_start) -> None:
    log("== summary")
    log(f"  {family.name}: seed {seed}, train loss {final_loss:.3f}, vocab {vocab}")
    for name, text, n, cont, lg, rg in stats["chosen"]:
        gaps = ", ".join(f"min {k} gap {g:.2e}" for k, g in rg.items())
        log(f"  [{name}] {n} tokens, min logit gap {lg:.4f}, {gaps}")
        log(f"     prompt: {text[:70]!r}{'...' if len(text) > 70 else ''}")
        log(f"     greedy: {cont!r}")
    log(f"  min top1-top2 logit gap over all steps/variants: {stats['min_logit_gap']:.5f}")
    for k, g in stats["router_gaps"].items():
        log(f"  min {k} gap over {stats['router_checks'][k]} (token, layer) checks: {g:.3e}")
    for layer, c in stats["expert_usage"].items():
        log(f"  layer {layer} expert selections (default variant, all reference tokens): {c}")
    total = 0
    for p in sorted(out_dir.iterdir()) + [ref_path]:
        total += p.stat().st_size
        rel = p.relative_to(REPO) if p.is_relative_to(REPO) else p
        log(f"  {rel}  {p.stat().st_size:,} B  sha256 {sha256_file(p)[:16]}")
    log(f"  total written: {total:,} B ({total / 2**20:.2f} MiB) in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
