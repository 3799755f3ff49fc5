"""`bigram`: a next-character table, the smallest language model (the README's example of adding a model)."""

from pydantic import Field

from genq.core.spec import ModelSpec, TrainParams


class BigramParams(TrainParams):
    block_size: int = Field(8, ge=1, le=1024)
    max_steps: int = Field(50, ge=1, le=100_000)


SPEC = ModelSpec(name="bigram", data="text", params=BigramParams,
                 estimate=lambda p: (256 * 256, p["batch_size"] * p["block_size"] * 256 * 4),
                 recipe="genq.core.models.bigram.recipe:BigramRecipe", summary="a next-character table")
