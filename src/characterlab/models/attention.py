"""A decode-step attention for CPUs, registered with transformers as ``characterlab_sdpa``.

When one new token attends to its cache, PyTorch's CPU SDPA kernels are slow for grouped-query
models such as SmolLM2 (9 query heads share 3 key/value heads): on 2 cores, batch 128 and 80
cached tokens, 1.5-4 ms a layer, a third of the decode step. Two batched matmuls with the query
heads grouped under their key/value head take 0.9 ms and need no copy of the cache. The scores
are the matmul's own dtype (bf16 on CPUs that have it, as the rest of the model), turned to fp32
for the mask and softmax; in fp32 the result equals SDPA's to rounding (a test checks it).
Prefill (several query tokens), dropout, soft-capping and position biases go to transformers'
SDPA function unchanged, and masks are built as for ``sdpa``.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "characterlab_sdpa"


def decode_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if (q_len != 1 or dropout or heads % kv_heads or kwargs.get("softcap") is not None
            or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float()  # (batch, kv_heads, group, keys)
    scores.mul_(scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores.add_(attention_mask)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # (batch, kv_heads, group, dim)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, decode_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)
