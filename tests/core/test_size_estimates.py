"""The submission-time memory estimate counts the text networks' parameters as the networks have them."""

from __future__ import annotations

import pytest

from genq.core.recipes import gpt, gru
from genq.jobs.estimate import CHAR_VOCAB, ESTIMATORS
from genq.jobs.params import validate_train_params


@pytest.mark.parametrize(("recipe", "params"), [
    (gpt, {}),
    (gpt, {"n_layer": 2, "n_embd": 64, "n_head": 2, "block_size": 32}),
    (gru, {}),
    (gru, {"n_layer": 2, "hidden_size": 128, "n_embd": 64}),
])
def test_parameter_count_matches_the_network(recipe, params):
    p = validate_train_params(recipe.MODEL.kind, params)
    net = recipe.MODEL.build(recipe.MODEL.config(p, CHAR_VOCAB))
    actual = sum(q.numel() for q in net.parameters())
    estimated, _ = ESTIMATORS[recipe.MODEL.kind](p)
    assert abs(estimated - actual) <= 0.01 * actual, (estimated, actual)
