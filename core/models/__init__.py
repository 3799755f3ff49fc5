"""The model kinds: one package each, declaring its `SPEC` (genq.core.spec) in a torch-free `__init__.py`,
with its network (`net.py`) and its recipe (`recipe.py`: config, training step, evaluation, generation).
Modules starting with "_" are shared by several kinds and are not kinds themselves."""
