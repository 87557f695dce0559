"""Triton kernels for every AlexNet layer."""
