"""Model references -> loaded models; batched generation; the embedded SmolLM2; the API client."""

from characterlab.models.refs import ModelRef, parse_model_ref

__all__ = ["ModelRef", "parse_model_ref"]
