#!/usr/bin/env python3
"""Writes the Hugging Face reference outputs that tests/model/tokenizer compares against.

For each tokenizer below and each line of tests/fixtures/tokenizers/corpus.jsonl (one JSON string a
line) it writes one line of tests/fixtures/tokenizers/<name>.expected.jsonl:
  {"ids": encode(text, add_special_tokens=False).ids,
   "decoded": decode(ids, skip_special_tokens=False),
   "decoded_skip_special": decode(ids, skip_special_tokens=True)}
and tests/fixtures/tokenizers/<name>.decode_expected.jsonl: seeded random id sequences (which split
UTF-8 characters across tokens and mix in special tokens) with both decodings. It also derives
tests/fixtures/tokenizers/fixture_options/tokenizer.json from the fixture tokenizer, to cover the
options that Qwen3's file does not use.

Run with a Python that has the `tokenizers` package, from anywhere:
  python tools/make_tokenizer_expectations.py [name ...]
A tokenizer whose file does not exist yet is reported and skipped, so the script can be rerun once
it appears.
"""

import json
import lzma
import random
import sys
import tempfile
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "tokenizers"
CORPUS = FIXTURES / "corpus.jsonl"

FIXTURE_TOKENIZER = ROOT / "tests" / "fixtures" / "tiny-qwen3-moe" / "tokenizer.json"
OPTIONS_TOKENIZER = FIXTURES / "fixture_options" / "tokenizer.json"
TEMPLATE_TOKENIZER = FIXTURES / "fixture_template" / "tokenizer.json"

# name -> tokenizer.json path (".xz" files are unpacked to a temporary file first)
TOKENIZERS = {
    "qwen3": FIXTURES / "qwen3" / "tokenizer.json.xz",
    "fixture": FIXTURE_TOKENIZER,
    "fixture_options": OPTIONS_TOKENIZER,
    "fixture_template": TEMPLATE_TOKENIZER,
}

RANDOM_SEQUENCES = 200


def write_options_variant():
    """Derives from the fixture tokenizer one that uses the options real tokenizers rarely do:
    normalizer and pre-tokenizer sequences, every split behaviour, invert, Digits, ByteLevel's own
    regex and prefix space, "a b" merges, ignore_merges, and added tokens with lstrip, rstrip,
    single_word and normalized."""
    config = json.loads(FIXTURE_TOKENIZER.read_text(encoding="utf-8"))
    config["normalizer"] = {
        "type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}
    byte_level = {"add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    config["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "MergedWithNext",
         "invert": False},
        {"type": "Digits", "individual_digits": True},
        {"type": "Split", "pattern": {"String": "'"}, "behavior": "MergedWithPrevious",
         "invert": False},
        {"type": "Split", "pattern": {"Regex": "[\\p{P}]+"}, "behavior": "Contiguous",
         "invert": True},
        {"type": "Split", "pattern": {"String": "-"}, "behavior": "Removed", "invert": False},
        dict(type="ByteLevel", **byte_level),
    ]}
    config["decoder"] = {"type": "Sequence", "decoders": [dict(type="ByteLevel", **byte_level)]}
    model = config["model"]
    model["merges"] = [" ".join(merge) if isinstance(merge, list) else merge
                       for merge in model["merges"]]
    model["ignore_merges"] = True
    options = {
        "<|im_start|>": {"lstrip": True},
        "<|im_end|>": {"rstrip": True},
        "<think>": {"single_word": True, "normalized": True},
        "</think>": {"lstrip": True, "rstrip": True, "normalized": True},
    }
    for token in config["added_tokens"]:
        token.update(options.get(token["content"], {}))
    next_id = max(token["id"] for token in config["added_tokens"]) + 1
    config["added_tokens"].append({
        "id": next_id, "content": "[MASK]", "single_word": True, "lstrip": True,
        "rstrip": False, "normalized": True, "special": True})
    OPTIONS_TOKENIZER.parent.mkdir(parents=True, exist_ok=True)
    OPTIONS_TOKENIZER.write_text(json.dumps(config, ensure_ascii=False, indent=1) + "\n",
                                 encoding="utf-8")


def write_template_variant():
    """Derives from the fixture tokenizer one whose post-processor adds special tokens around a
    text (a BOS before it and an EOS after it), as Llama-, Mistral- and DeepSeek-style files do:
    Sequence[ByteLevel, TemplateProcessing]."""
    config = json.loads(FIXTURE_TOKENIZER.read_text(encoding="utf-8"))
    ids = {token["content"]: token["id"] for token in config["added_tokens"]}
    bos, eos = "<|im_start|>", "<|endoftext|>"
    config["post_processor"] = {"type": "Sequence", "processors": [
        config["post_processor"],
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": eos, "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}},
                  {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {name: {"id": name, "ids": [ids[name]], "tokens": [name]}
                            for name in (bos, eos)}}]}
    TEMPLATE_TOKENIZER.parent.mkdir(parents=True, exist_ok=True)
    TEMPLATE_TOKENIZER.write_text(json.dumps(config, ensure_ascii=False, indent=1) + "\n",
                                  encoding="utf-8")


def write_special_expectations(name, tokenizer, corpus):
    """encode(text, add_special_tokens=True) of the corpus: what the post-processor adds."""
    out = [dump({"ids": tokenizer.encode(text, add_special_tokens=True).ids}) for text in corpus]
    (FIXTURES / f"{name}.special_expected.jsonl").write_text("\n".join(out) + "\n",
                                                              encoding="utf-8")


def read_corpus():
    # Split on "\n" only: str.splitlines would also split on U+2028, U+0085 and friends.
    lines = CORPUS.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line]


def load(path):
    if path.suffix != ".xz":
        return Tokenizer.from_file(str(path))
    with tempfile.NamedTemporaryFile(suffix=".json") as unpacked:
        unpacked.write(lzma.decompress(path.read_bytes()))
        unpacked.flush()
        return Tokenizer.from_file(unpacked.name)


def dump(record):
    # ASCII-only JSON keeps every record on one line whatever characters it holds.
    return json.dumps(record, ensure_ascii=True)


def write_corpus_expectations(name, tokenizer, corpus):
    out = []
    for text in corpus:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        out.append(dump({
            "ids": ids,
            "decoded": tokenizer.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tokenizer.decode(ids, skip_special_tokens=True),
        }))
    (FIXTURES / f"{name}.expected.jsonl").write_text("\n".join(out) + "\n", encoding="utf-8")


def write_decode_expectations(name, tokenizer):
    rng = random.Random(20240601)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    special_ids = sorted(
        id_ for id_, token in tokenizer.get_added_tokens_decoder().items() if token.special)
    # Tokens that are parts of multi-byte characters make the lossy UTF-8 repair do real work.
    partial_ids = [
        id_ for id_ in range(min(vocab_size, 20000))
        if "\ufffd" in tokenizer.decode([id_], skip_special_tokens=False)
    ]
    out = []
    for _ in range(RANDOM_SEQUENCES):
        ids = []
        for _ in range(rng.randint(1, 24)):
            roll = rng.random()
            if roll < 0.5 and partial_ids:
                ids.append(rng.choice(partial_ids))
            elif roll < 0.6 and special_ids:
                ids.append(rng.choice(special_ids))
            else:
                ids.append(rng.randrange(vocab_size))
        out.append(dump({
            "ids": ids,
            "decoded": tokenizer.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tokenizer.decode(ids, skip_special_tokens=True),
        }))
    (FIXTURES / f"{name}.decode_expected.jsonl").write_text("\n".join(out) + "\n",
                                                             encoding="utf-8")


def main(names):
    corpus = read_corpus()
    if FIXTURE_TOKENIZER.exists():
        write_options_variant()
        write_template_variant()
    missing = []
    for name in names or TOKENIZERS:
        path = TOKENIZERS[name]
        if not path.exists():
            print(f"{name}: {path} does not exist yet, skipped")
            missing.append(name)
            continue
        tokenizer = load(path)
        write_corpus_expectations(name, tokenizer, corpus)
        write_decode_expectations(name, tokenizer)
        write_special_expectations(name, tokenizer, corpus)
        print(f"{name}: {len(corpus)} corpus entries, {RANDOM_SEQUENCES} decode sequences")
    return 1 if missing and names else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
