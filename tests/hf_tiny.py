"""A tiny random GPT-2 and a byte-level BPE tokenizer trained here, saved with save_pretrained: a Hugging Face
model folder built offline for the hf-causal-lm tests."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = Path(__file__).resolve().parent / "data" / "tinyshakespeare-20k.txt"
EOS = "<|endoftext|>"


def build_tiny_gpt2(folder: Path, vocab_size: int = 320, n_positions: int = 64, seed: int = 0, n_layer: int = 2,
                    n_embd: int = 32, n_head: int = 2) -> Path:
    """GPT2Config(n_layer=2, n_head=2, n_embd=32) (unless told otherwise) with random weights and a BPE tokenizer
    trained on the test corpus, written to `folder` by save_pretrained; returns `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([CORPUS.read_text()], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS)
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=len(tokenizer),
                        n_positions=n_positions, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
