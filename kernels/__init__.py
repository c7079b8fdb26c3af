"""Triton kernels for the decode step, installed as gguflm.kernels."""
