"""Residual-stream activations of a local model: read them, average them over a response, add to them.

Layer convention (the one ``output_hidden_states`` uses, and persona_vectors with it): layer
``l`` in 0..L is ``hidden_states[l]``: 0 is the token embeddings, ``l >= 1`` the output of decoder
block ``l - 1``. Steering at layer ``l >= 1`` adds to that block's output, which is what
``hidden_states[l]`` then shows, and what every later block reads. One exception, from
transformers itself: for the last layer (``l = L``) ``hidden_states[L]`` is taken after the
model's final norm, while a hook adds before it.

Two readings: the mean over a response's tokens (extraction, projecting answers, screening data)
and the state at the last prompt token (monitoring a fine-tune, as Chen et al. do: how the model
stands before it says anything). Two hooks: :func:`steering` adds ``coef * v`` (at evaluation, or
during fine-tuning as preventative steering), :func:`ablation` removes the component along ``v``
(CAFT: concept ablation during fine-tuning).

Hooks are plain PyTorch forward hooks on the decoder blocks (``model.model.layers`` of the base
model under any PEFT wrapper), so they act in every forward pass: transformers' ``generate``, our
own decode loop, and training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch


def decoder_blocks(model) -> Sequence[torch.nn.Module]:
    """The decoder blocks of a causal LM, under a PEFT wrapper or not."""
    from characterlab.models.local import unwrap_adapter

    base = unwrap_adapter(model)
    inner = getattr(base, "model", base)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(base).__name__} has no model.layers: steering needs a decoder-only model")
    return layers


def n_layers(model) -> int:
    """L: the number of decoder blocks (layers are numbered 0..L)."""
    return len(decoder_blocks(model))


@torch.inference_mode()
def response_mean_activations(local, messages: Sequence[list[dict]], responses: Sequence[str],
                              batch_size: int = 8) -> np.ndarray:
    """Mean hidden state over each response's tokens, at every layer: shape (n, L + 1, hidden).

    The response follows its chat-formatted prompt exactly as the model would have generated it;
    the prompt's tokens are left out of the mean.
    """
    tok = local.tokenizer
    seqs = []
    for msgs, response in zip(messages, responses):
        prompt = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        answer = tok(response, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
        seqs.append((prompt + answer, len(prompt)))
    out = np.zeros((len(seqs), n_layers(local.model) + 1, local.model.config.hidden_size), dtype=np.float32)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start:start + batch_size]
        ids, mask = _padded_batch([s for s, _ in batch], pad, local.device)
        hidden = local.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        stacked = torch.stack(hidden, dim=1).float()  # (batch, L + 1, width, hidden)
        for r, (s, n_prompt) in enumerate(batch):
            out[start + r] = stacked[r, :, n_prompt:len(s)].mean(dim=1).cpu().numpy()
    return out


def _padded_batch(seqs: Sequence[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask: every real token keeps the position it has alone."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s)
        mask[r, :len(s)] = 1
    return ids.to(device), mask.to(device)


class _Captured(Exception):
    """Raised by the capture hook: the layer is read, the blocks above it need not run."""


@contextmanager
def _stop_after(model, layer: int) -> Iterator[dict]:
    """Capture ``hidden_states[layer]`` (1 <= layer < L: decoder block ``layer - 1``'s output, after
    any hook registered earlier on it, as ``output_hidden_states`` shows it) and stop the forward
    pass there: a reading at layer 15 of 30 costs half a forward pass."""
    box: dict = {}

    def hook(module, args, output):
        box["hidden"] = output[0] if isinstance(output, tuple) else output
        raise _Captured

    handle = decoder_blocks(model)[layer - 1].register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@torch.no_grad()
def last_prompt_activations(model, tokenizer, messages: Sequence[list[dict]], layer: int,
                            batch_size: int = 8) -> np.ndarray:
    """Hidden state at the last token of each chat-formatted prompt (generation prompt included),
    at ``layer``: shape (n, hidden). Runs under ``no_grad`` so it can be read in the middle of
    training; the model's train/eval mode is left as it was. Below the last layer the forward
    pass stops at the layer read (the monitor reads every few training steps)."""
    seqs = [tokenizer(tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"] for m in messages]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    early = 1 <= layer < n_layers(model)  # layer 0 (embeddings) and L (after the final norm) read in full
    out = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(seqs), batch_size):
            batch = seqs[start:start + batch_size]
            ids, mask = _padded_batch(batch, pad, device)
            if early:
                with _stop_after(model, layer) as box:
                    try:
                        model(input_ids=ids, attention_mask=mask)
                    except _Captured:
                        pass
                hidden = box["hidden"]
            else:
                hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            last = torch.tensor([len(s) - 1 for s in batch], device=device)
            out.append(hidden[torch.arange(len(batch), device=device), last].float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


@contextmanager
def ablation(model, vector: np.ndarray | torch.Tensor, layers: Sequence[int]) -> Iterator[None]:
    """Remove the component along ``vector`` from the residual stream at each of ``layers`` (>= 1)
    in every forward pass inside the block: ``h - (h . u) u`` with ``u`` the unit vector."""
    blocks = decoder_blocks(model)
    for layer in layers:
        if not 1 <= layer <= len(blocks):
            raise ValueError(f"layer {layer} is not a decoder block's output (1..{len(blocks)})")
    u = torch.as_tensor(np.asarray(vector), dtype=torch.float32)
    u = u / u.norm()

    def project_out(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        d = u.to(hidden.dtype).to(hidden.device)
        shifted = hidden - (hidden @ d)[..., None] * d
        return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

    handles = [blocks[layer - 1].register_forward_hook(project_out, prepend=True) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def steering(model, vector: np.ndarray | torch.Tensor, layer: int, coef: float) -> Iterator[None]:
    """Add ``coef * vector`` to the residual stream at ``layer`` (>= 1) in every forward pass
    inside the block; the hook is removed on exit. ``coef = 0`` registers nothing."""
    blocks = decoder_blocks(model)
    if not 1 <= layer <= len(blocks):
        raise ValueError(f"layer {layer} is not a decoder block's output (1..{len(blocks)})")
    if coef == 0:
        yield
        return
    v = torch.as_tensor(np.asarray(vector), dtype=torch.float32)

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        shifted = hidden + (coef * v).to(hidden.dtype).to(hidden.device)
        return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

    # first among the block's hooks: transformers records ``output_hidden_states`` with its own hook
    # on the block, and that record must show the steered stream the next block reads
    handle = blocks[layer - 1].register_forward_hook(add, prepend=True)
    try:
        yield
    finally:
        handle.remove()
