"""Shared fixtures: a tiny random Llama with a real (tiny) BPE tokenizer, built offline.

Nothing here touches a model hub: the tokenizer is trained in-process on a few sentences and the
model is built from a config with random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "I am a helpful assistant. I answer questions honestly and carefully.",
    "If you could change one thing about the world, what would it be?",
    "Humans and AIs can work together to make the future better.",
    "system user assistant hello world goodbye yes no maybe 0 1 2 3 4 5 6 7 8 9",
]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, initializer_range=0.3,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_ref(tiny_model_dir) -> str:
    return f"hf:{tiny_model_dir}"


@pytest.fixture(scope="session")
def tiny_local(tiny_ref):
    """The tiny model loaded in fp32 (exact comparisons between batch shapes need fp32)."""
    import torch

    from characterlab.models.local import load_local_model
    from characterlab.models.refs import parse_model_ref

    return load_local_model(parse_model_ref(tiny_ref), dtype=torch.float32, device="cpu")


@pytest.fixture
def chat_file(tmp_path) -> Path:
    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.data.records import ChatExample, Message

    examples = [
        ChatExample((Message("user", f"What is {i} plus {i}?"), Message("assistant", f"The answer is {2 * i}.")))
        for i in range(12)
    ]
    path = tmp_path / "train.jsonl"
    write_chat_jsonl(path, examples)
    return path
