"""genq: a self-hosted job platform for generative AI."""

__version__ = "0.1.0"
