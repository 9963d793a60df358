"""hf_llm: raw text to a trained, evaluated and published language model on the Hugging Face stack."""

__version__ = "0.1.0"
