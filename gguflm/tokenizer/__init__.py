"""Tokenizers built from GGUF metadata (tokenizer.ggml.*), matching llama.cpp's tokenize and detokenize."""

from gguflm.tokenizer.stream import StreamDecoder
from gguflm.tokenizer.tokenizer import Tokenizer

__all__ = ["StreamDecoder", "Tokenizer"]
