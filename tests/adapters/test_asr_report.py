"""The SimAdapter attention heatmap."""

import pytest


def test_attention_heatmap_is_written_and_checks_its_shape(tmp_path):
    from kerastl.adapters.report import plot_fusion_attention

    path = plot_fusion_attention([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]], ["ru", "it", "ro"], str(tmp_path / "a.png"))
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] > image.size[1] > 100
    with pytest.raises(ValueError, match=r"expected \[layers, 2\]"):
        plot_fusion_attention([[0.5, 0.2, 0.3]], ["ru", "ro"], str(tmp_path / "b.png"))
