"""What the text models (gpt, gru) share before torch: their params and the vocabulary the estimate assumes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from genq.core.errors import DataError
from genq.core.spec import TrainParams

CHAR_VOCAB = 256  # a char tokenizer's vocabulary is the corpus' characters: a few hundred at most
BPE_BYTES = 256  # byte-level BPE's first tokens: a smaller vocab_size still got these (and the estimate counted less)


class TextParams(TrainParams):
    tokenizer: Literal["char", "word", "bpe"] = "char"
    # bpe: the vocabulary it learns; word: the most frequent words kept (the rest read as <UNK>); char: unused
    vocab_size: int = Field(2000, ge=16, le=200_000)
    block_size: int = Field(64, ge=2, le=8192)

    @model_validator(mode="after")
    def _bpe_holds_its_bytes(self) -> TextParams:
        if self.tokenizer == "bpe" and self.vocab_size < BPE_BYTES:
            raise ValueError(f"vocab_size ({self.vocab_size}) must be at least {BPE_BYTES} with the bpe tokenizer: "
                             "its vocabulary starts with the 256 bytes")
        return self


def vocab_bound(p: dict[str, Any]) -> int:
    """The largest vocabulary these params can give: what the memory estimate counts."""
    return CHAR_VOCAB if p["tokenizer"] == "char" else p["vocab_size"]


def check_text_data(p: dict[str, Any], info: dict[str, Any]) -> None:
    """DataError when the text is too short for block_size whatever it tokenizes to: a char tokenizer makes one
    token a character, a word tokenizer at most one, byte-level bpe at most one a byte (info's "bytes": the
    file's size); and the last tenth of the tokens, held out for validation, must be longer than block_size
    (genq.core.data.text)."""
    most, unit = (info.get("bytes"), "bytes") if p["tokenizer"] == "bpe" else (info.get("chars"), "characters")
    if most is None:  # not counted: a dataset uploaded before datasets counted their characters
        return
    block = p["block_size"]
    if most - int(0.9 * most) <= block:
        raise DataError(f"the text is too short for block_size={block}: {most} {unit} make at most {most} "
                        f"{p['tokenizer']} tokens, and the tenth held out for validation must be longer than "
                        f"block_size (about {10 * (block + 1)} {unit}); upload more text or lower block_size")
