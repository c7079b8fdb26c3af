"""gguflm: run GGUF language models with Triton kernels and a CUDA-graphed decode loop."""

__version__ = "0.1.0"
