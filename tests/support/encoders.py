"""A sentence encoder small enough for tests: BERT's layout and file names, random weights."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tiny_encoder(folder: Path, texts: list[str], *, words: int = 400, hidden: int = 8, seed: int = 0) -> Path:
    """``config.json``, ``vocab.txt`` (the ``words`` commonest lowercase words of ``texts``) and
    ``model.safetensors`` of a one-layer BERT with random weights, as sentence-transformers
    lays them out."""
    from safetensors.numpy import save_file

    counts = Counter(w for t in texts for w in re.findall(r"[a-z]+", t.lower()))
    vocab = SPECIAL + [w for w, _ in counts.most_common(words)] + ["##s", "##ed", "##ing"]
    config = {"hidden_size": hidden, "num_attention_heads": 2, "num_hidden_layers": 1,
              "intermediate_size": 2 * hidden, "max_position_embeddings": 64, "layer_norm_eps": 1e-12,
              "vocab_size": len(vocab), "type_vocab_size": 2}
    rng = np.random.default_rng(seed)

    def randn(*shape):
        return rng.normal(0, 0.5, shape).astype(np.float32)

    def norm(name):
        return {f"{name}.weight": np.ones(hidden, np.float32), f"{name}.bias": np.zeros(hidden, np.float32)}

    def dense(name, out, inp):
        return {f"{name}.weight": randn(out, inp), f"{name}.bias": randn(out)}

    weights = {"embeddings.word_embeddings.weight": randn(len(vocab), hidden),
               "embeddings.position_embeddings.weight": randn(64, hidden),
               "embeddings.token_type_embeddings.weight": randn(2, hidden), **norm("embeddings.LayerNorm")}
    at = "encoder.layer.0"
    for part in ("query", "key", "value"):
        weights |= dense(f"{at}.attention.self.{part}", hidden, hidden)
    weights |= dense(f"{at}.attention.output.dense", hidden, hidden) | norm(f"{at}.attention.output.LayerNorm")
    weights |= dense(f"{at}.intermediate.dense", 2 * hidden, hidden) | dense(f"{at}.output.dense", hidden, 2 * hidden)
    weights |= norm(f"{at}.output.LayerNorm")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    save_file(weights, str(folder / "model.safetensors"))
    return folder
