"""Time series under distribution shift: AdaRNN (TDC + TDM), AdaTransformer and baselines.

- `distances`: MMD (linear, multi-kernel RBF), CORAL, cosine, KL, JS, adversarial.
- `tdc`: `split` (greedy TDC), `random_split`, `reverse_split` -> `Segmentation`;
  `segment_windows` for labelled windows of many recordings.
- `AdaRNN`, `AdaTransformer`: forecasters (or, with `num_classes`, window classifiers) whose
  `fit` matches hidden states across segments.
- `TDMCallback`: the boosting update of the importance weights.
- `build_forecaster`: the paper's baselines (GRU, MMD-RNN, DANN-RNN, Transformer) by name.
- `classification`: ACC / macro P, R, F1 / one-vs-rest AUC, and the gradient-boosted trees
  baseline on window statistics (the paper's UCI HAR table).
- `report`: plots of the segmentation, the forecast, the importance weights, the confusion matrix.

Example:
>>> from kerastl.timeseries import AdaRNN, TDMCallback, tdc          # doctest: +SKIP
>>> segmentation = tdc.split(train_features, k=3)                     # doctest: +SKIP
"""

from kerastl.timeseries import classification, distances, tdc
from kerastl.timeseries.adarnn import AdaRNN
from kerastl.timeseries.forecasters import MODELS, build_forecaster, persistence_forecast
from kerastl.timeseries.gates import TemporalGate
from kerastl.timeseries.matching import ForecastHead, TemporalMatchingModel
from kerastl.timeseries.tdm import TDMCallback, boosting_update
from kerastl.timeseries.transformer import AdaTransformer

__all__ = ["AdaRNN", "AdaTransformer", "ForecastHead", "MODELS", "TDMCallback", "TemporalGate",
           "TemporalMatchingModel", "boosting_update", "build_forecaster", "classification", "distances",
           "persistence_forecast", "tdc"]
