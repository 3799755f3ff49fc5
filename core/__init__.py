"""genq.core: the model library (networks, data, training, sampling, evaluation). No web, queue or database."""
