"""Hugging Face checkpoint to GGUF conversion."""

from gguflm.convert.plan import OUTTYPES, ConversionPlan, make_plan
from gguflm.convert.writer import convert_checkpoint, default_output

__all__ = ["OUTTYPES", "ConversionPlan", "convert_checkpoint", "default_output", "make_plan"]
