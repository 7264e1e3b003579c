"""Backbones shared by the methods."""

from kerastl.nets.small_cnn import small_cnn
from kerastl.nets.wide_resnet import wide_resnet, wrn_28_2, wrn_28_8, wrn_stl10

__all__ = ["small_cnn", "wide_resnet", "wrn_28_2", "wrn_28_8", "wrn_stl10"]
