"""Backbones shared by the methods."""

from kerastl.nets.small_cnn import small_cnn

__all__ = ["small_cnn"]
