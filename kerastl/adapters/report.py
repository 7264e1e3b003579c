"""How a cross-lingual ASR run is shown: SimAdapter's attention over the language adapters.

`plot_fusion_attention` draws a heatmap with one row per encoder layer and one column per
fused adapter (the source languages and the target's own): which languages the target
borrows from at which depth.

Example:
>>> import numpy as np
>>> attention = np.array([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
>>> plot_fusion_attention(attention, ["ru", "it", "ro"], "attention.png", title="ro")  # doctest: +SKIP
'attention.png'
"""

from __future__ import annotations

import numpy as np

from kerastl.plots import pyplot, save_figure


def plot_fusion_attention(attention, languages: list[str], path: str, title: str = "") -> str:
    """Heatmap of SimAdapter attention: rows = encoder layers (1 = closest to the input),
    columns = `languages` (the fused adapters, in the fusion's order); each cell holds the
    attention weight averaged over the evaluated frames (rows sum to 1). Returns `path`."""
    weights = np.asarray(attention, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(languages):
        raise ValueError(f"attention of shape {weights.shape}: expected [layers, {len(languages)}]")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(languages) + 2.2, 0.55 * len(weights) + 1.6))
    top = max(1e-6, float(weights.max()))
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=top, aspect="auto")
    for row, column in np.ndindex(*weights.shape):
        value = weights[row, column]
        ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="black" if value > 0.6 * top else "white")
    ax.set_xticks(range(len(languages)), languages)
    ax.set_yticks(range(len(weights)), [str(layer + 1) for layer in range(len(weights))])
    ax.set(xlabel="adapter (language)", ylabel="encoder layer")
    fig.colorbar(image, ax=ax, label="attention weight")
    return save_figure(fig, path, title or "SimAdapter attention over language adapters", dpi=100)
