"""Cross-entropy through a frozen LM head without materialising the full fp32 logits.

With LoRA the LM head (often the tied embedding) is frozen, so the only gradient the loss must
return is the one for the hidden states. We compute it chunk by chunk in the forward pass:
logits of a few rows, their log-sum-exp, ``softmax - onehot``, times the head. The fp32
``[tokens, vocab]`` logits never exist in full (for SmolLM2 that is 200 MB per 1k tokens, and
the log-softmax over it and its backward took a fifth of a CPU training step). GPU libraries do
this fused in Triton (Liger); nothing does it on a CPU, hence these few lines.
"""

from __future__ import annotations

import torch


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk]
            logits = (h @ weight.t()).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None])[:, 0]).sum()
            probs = torch.exp(logits.sub_(lse[:, None]))
            probs[torch.arange(len(t), device=t.device), t] -= 1.0
            grad_hidden[start : start + chunk] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None


def frozen_head_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """Sum over rows of ``cross_entropy(hidden @ weight.T, targets)``, accumulated in fp32 (or fp64).

    ``weight`` must not require a gradient (a frozen head); ``hidden`` gets its exact gradient.
    """
    if weight.requires_grad:
        raise ValueError("frozen_head_cross_entropy_sum needs a frozen head; use F.cross_entropy instead")
    if hidden.shape[0] == 0:
        return hidden.sum().to(torch.promote_types(hidden.dtype, torch.float32)) * 0.0
    return _FrozenHeadCrossEntropy.apply(hidden, weight, targets, chunk)
