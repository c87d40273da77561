"""What happens around a Trainer: the run plan (config, directory, resume, world size, scaled schedule), the
objects built from it, the train/eval tasks, loggers, and sweeps whose failing jobs do not stop them.

Imports ``datnet.lightning`` (and through it the model, data and evaluation packages); nothing imports it but
the entry points (``src/train.py``, ``src/eval.py``) and ``scripts/``.
"""
