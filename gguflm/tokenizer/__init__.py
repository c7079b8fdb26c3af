"""Tokenizers built from GGUF metadata (tokenizer.ggml.*)."""
