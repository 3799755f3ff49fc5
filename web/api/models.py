"""/api/v1/models: the pretrained models of the models folder (GENQ_MODELS), which hf-causal-lm jobs name by "base"."""

from __future__ import annotations

from flask import jsonify

from genq.core import base_models
from genq.web import state
from genq.web.api import api_blueprint

bp = api_blueprint("api_models")


@bp.get("/models")
def index():
    """{"models": [{"name", "model_type", "architectures", "causal_lm", "parameters", "size_bytes", "error"}]}."""
    return jsonify({"models": base_models.list_models(state().settings.models_folder)})
