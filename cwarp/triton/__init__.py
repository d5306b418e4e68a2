"""Triton kernels of cwarp: one module per op, imported only when asked for."""
