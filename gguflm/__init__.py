"""gguflm: run GGUF language models with Triton kernels and a CUDA-graphed decode loop."""

from gguflm.api import Model, load
from gguflm.errors import GGUFLMError
from gguflm.sampling import SamplingParams

__version__ = "0.1.0"
__all__ = ["GGUFLMError", "Model", "SamplingParams", "load"]
