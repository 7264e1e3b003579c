"""Backbones shared by the methods."""

from kerastl.nets.asr_encoder import ASREncoder, subsampled_lengths  # noqa: F401 (the speech encoder)
from kerastl.nets.resnet import resnet, resnet50
from kerastl.nets.small_cnn import small_cnn
from kerastl.nets.wide_resnet import wide_resnet, wrn_28_2, wrn_28_8, wrn_stl10

__all__ = ["resnet", "resnet50", "small_cnn", "wide_resnet", "wrn_28_2", "wrn_28_8", "wrn_stl10"]

NETWORKS = ("small_cnn", "wrn_28_2", "wrn_28_8", "wrn_stl10", "resnet50")


def build_network(name: str, input_shape, num_classes: int, bn_momentum: float = 0.999, width: int = 32):
    """A backbone by name (logits output); `width` applies to `small_cnn` only; `resnet50`
    normalises RGB inputs with ImageNet's mean and std.

    Example:
    >>> build_network("wrn_28_2", (32, 32, 3), 10).output_shape
    (None, 10)
    """
    builders = {
        "small_cnn": lambda: small_cnn(input_shape, num_classes, width=width, bn_momentum=bn_momentum),
        "wrn_28_2": lambda: wrn_28_2(input_shape, num_classes, bn_momentum=bn_momentum),
        "wrn_28_8": lambda: wrn_28_8(input_shape, num_classes, bn_momentum=bn_momentum),
        "wrn_stl10": lambda: wrn_stl10(input_shape, num_classes, bn_momentum=bn_momentum),
        "resnet50": lambda: resnet50(input_shape, num_classes, bn_momentum=bn_momentum,
                                     normalize=input_shape[-1] == 3),
    }
    if name not in builders:
        raise ValueError(f"network {name!r}: expected one of {', '.join(NETWORKS)}")
    return builders[name]()


__all__ += ["NETWORKS", "build_network"]
