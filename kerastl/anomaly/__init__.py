"""AMSL anomaly detection: the protocol, view transforms, memories, the model, detectors, baselines.

- `protocol`: `load_anomaly_data` / `anomaly_split` -> `AnomalyData` (normal classes,
  training on normal windows only, the 60 / 40 split by recording, scaling).
- `transforms`: the six self-supervised views (noise, negation, reversal, permutation,
  scaling, time warp; smoothing too) as batched TF ops; `make_views`.
- `MemoryModule`, `AdaptiveFusion`: softmax-addressed memory (global / per-view local) with
  MemAE shrinkage and an entropy loss; learned fusion of the two reads.
- `AMSL`: the Keras model (views, shared encoder, view classifier, memories, per-view
  decoders), trained with `model.fit` on normal windows.
- `AMSLDetector` and the baselines (`OCSVMDetector`, `KernelPCADetector`, `ConvAEDetector`,
  `LSTMAEDetector`): PyOD-shaped `fit` / `decision_function` / `predict`.
- `detection_metrics`, plots: `kerastl.anomaly.report`.

Example:
>>> from kerastl.anomaly import AMSLDetector                          # doctest: +SKIP
>>> detector = AMSLDetector(epochs=20).fit(x_train_normal)            # doctest: +SKIP
>>> detector.predict(x_test)                                          # doctest: +SKIP
"""

from kerastl.anomaly.baselines import (BASELINES, ConvAEDetector, ConvAutoencoder, KernelPCADetector,
                                       LSTMAEDetector, LSTMAutoencoder, OCSVMDetector, build_baseline)
from kerastl.anomaly.detector import AMSLDetector, AnomalyDetector, KerasDetector
from kerastl.anomaly.memory import AdaptiveFusion, MemoryModule
from kerastl.anomaly.model import AMSL
from kerastl.anomaly.protocol import AnomalyData, anomaly_split, load_anomaly_data
from kerastl.anomaly.report import METRIC_KEYS, detection_metrics

__all__ = ["AMSL", "AMSLDetector", "AdaptiveFusion", "AnomalyData", "AnomalyDetector", "BASELINES", "ConvAEDetector",
           "ConvAutoencoder", "KerasDetector", "KernelPCADetector", "LSTMAEDetector", "LSTMAutoencoder",
           "METRIC_KEYS", "MemoryModule", "OCSVMDetector", "anomaly_split", "build_baseline", "detection_metrics",
           "load_anomaly_data"]
