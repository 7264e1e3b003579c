"""The forecasters compared in the AdaRNN paper, by name, under one training loop.

| name | model | matching |
|---|---|---|
| `gru` | `AdaRNN(matching="none")` | none |
| `mmd_rnn` | `AdaRNN(matching="final", distance="mmd_rbf")` | MMD of the final hidden state |
| `dann_rnn` | `AdaRNN(matching="final", distance="adversarial")` | domain discriminator on the final hidden state |
| `adarnn` | `AdaRNN(matching="tdm")` | TDM, every layer and time step |
| `transformer` | `AdaTransformer(matching="none")` | none |
| `adatransformer` | `AdaTransformer(matching="tdm")` | TDM on each block's per-position output |

`persistence_forecast` is the naive baseline: the next value equals the last observed one.
With `num_classes` every model is the classifier of the same name (softmax head, cross-entropy
per segment; the paper's UCI HAR table). The gradient-boosted trees baseline of that table is
`kerastl.timeseries.classification.WindowStatisticsGBT`.

Example:
>>> model = build_forecaster("mmd_rnn", len_seq=24, num_features=6, num_domains=2)
>>> model.matching, model.distance_name
('final', 'mmd_rbf')
"""

from __future__ import annotations

import numpy as np

from kerastl.timeseries.adarnn import AdaRNN
from kerastl.timeseries.transformer import AdaTransformer

MODELS = ("adarnn", "gru", "mmd_rnn", "dann_rnn", "transformer", "adatransformer")
#: The distance each baseline is defined by; AdaRNN / AdaTransformer take the user's.
FIXED_DISTANCE = {"mmd_rnn": "mmd_rbf", "dann_rnn": "adversarial"}


def build_forecaster(name: str, len_seq: int, num_features: int, num_domains: int = 2, distance: str = "adversarial",
                     tdm_lambda: float = 0.5, hidden_size: int = 64, num_layers: int = 2,
                     bottleneck_width: int | None = 64, dropout: float = 0.0, use_gate: bool = True,
                     residual_index: int | None = None, num_classes: int | None = None,
                     head_dropout: float | None = None, matching_scale: str = "none"):
    """The model called `name` (one of `MODELS`), built for windows `[batch, len_seq, num_features]`;
    a classifier into `num_classes` classes when that is given."""
    common = dict(len_seq=len_seq, num_features=num_features, num_domains=num_domains, tdm_lambda=tdm_lambda,
                  bottleneck_width=bottleneck_width, dropout=dropout, use_gate=use_gate,
                  residual_index=residual_index, num_classes=num_classes, head_dropout=head_dropout,
                  matching_scale=matching_scale)
    if name in ("adarnn", "gru", "mmd_rnn", "dann_rnn"):
        matching = {"adarnn": "tdm", "gru": "none"}.get(name, "final")
        model = AdaRNN(hidden_sizes=[hidden_size] * num_layers, matching=matching,
                       distance=FIXED_DISTANCE.get(name, distance), name=name, **common)
    elif name in ("transformer", "adatransformer"):
        model = AdaTransformer(model_dim=hidden_size, num_layers=num_layers, num_heads=4, ff_dim=2 * hidden_size,
                               matching="tdm" if name == "adatransformer" else "none", distance=distance,
                               name=name, **common)
    else:
        raise ValueError(f"model {name!r}: expected one of {', '.join(MODELS)}")
    model.build((None, len_seq, num_features))
    return model


def persistence_forecast(windows, target_index: int) -> np.ndarray:
    """The last observed value of the target feature in each window `[batch, len_seq, features]`."""
    return np.asarray(windows)[:, -1, target_index]
