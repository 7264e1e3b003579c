"""AdaRNN: a GRU forecaster trained with temporal distribution matching (Du et al., CIKM 2021)."""

from __future__ import annotations

import keras

from kerastl.timeseries.matching import TemporalMatchingModel


@keras.saving.register_keras_serializable("kerastl")
class AdaRNN(TemporalMatchingModel):
    """A stack of GRU layers whose hidden sequences are matched across TDC segments.

    Args:
        len_seq: window length (time steps per input).
        num_features: features per time step.
        num_domains: K, the number of TDC segments a training batch draws from.
        hidden_sizes: GRU units per layer (paper: [64, 64]).
        matching: "tdm" (AdaRNN), "final" (MMD-RNN / DANN-RNN: the last hidden state only) or
            "none" (plain GRU).
        distance: a name from `kerastl.timeseries.distances.DISTANCES` (reference default:
            adversarial).
        tdm_lambda: weight of the matching loss (the reference's `dw`, 0.5).
        use_gate: weight time steps by the learned gates during pre-training (else uniformly).
        bottleneck_width: width of the bottleneck head (None: a single Dense(1)).
        dropout: dropout of the GRU outputs and of the head.
        residual_index: forecast the change from the last value of this feature (see
            `TemporalMatchingModel`); None forecasts the value itself, as the reference.
        num_classes: classify windows into this many classes instead of forecasting: the
            model returns class probabilities `[batch, num_classes]` (the paper's UCI HAR
            setting; see `TemporalMatchingModel`).

    Example:
    >>> model = AdaRNN(len_seq=24, num_features=6, num_domains=3)
    >>> model.compile(optimizer=keras.optimizers.Adam(5e-4, clipvalue=3.0))
    >>> model.build((None, 24, 6))
    >>> model.fit(segment_batches(...), steps_per_epoch=50, epochs=60,       # doctest: +SKIP
    ...           callbacks=[TDMCallback(pre_epoch=40)])
    >>> model(windows).shape                                                 # doctest: +SKIP
    (batch,)
    >>> classifier = AdaRNN(len_seq=64, num_features=6, num_domains=3, num_classes=7)
    >>> classifier.build((None, 64, 6))
    >>> tuple(classifier(np.zeros((2, 64, 6), "float32")).shape)    # class probabilities
    (2, 7)
    """

    def __init__(self, len_seq: int, num_features: int, num_domains: int = 2, hidden_sizes=(64, 64),
                 matching: str = "tdm", distance: str = "adversarial", tdm_lambda: float = 0.5,
                 use_gate: bool = True, bottleneck_width: int | None = 64, dropout: float = 0.0,
                 residual_index: int | None = None, num_classes: int | None = None, **kwargs):
        super().__init__(len_seq, num_features, num_domains, matching, distance, tdm_lambda, use_gate,
                         bottleneck_width, dropout, residual_index, num_classes=num_classes, **kwargs)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.encoder_layers = [keras.layers.GRU(units, return_sequences=True, dropout=dropout, name=f"gru_{i}")
                               for i, units in enumerate(self.hidden_sizes)]
        self._create_matching()

    def get_config(self):
        return {**super().get_config(), "hidden_sizes": self.hidden_sizes}
