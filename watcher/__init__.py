"""batch-watcher: watch OpenAI vector-store file batches until they finish."""

__version__ = "0.1.0"
