"""restem core: problems, prompts, sampling, verification, training, evaluation and storage.

Framework-free: nothing in this package imports dagster. The Dagster layer (``assets/``,
``resources/``) calls into it; the same functions run without Dagster (see benchmarks).
"""

__version__ = "0.1.0"
