"""characterlab: study how training shapes a language model's character."""

__version__ = "0.1.0"
