"""AMSL anomaly detection: transformations, memories, the AMSL model, detectors, baselines.

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
from kerastl.anomaly.report import METRIC_KEYS, detection_metrics

__all__ = ["AMSL", "AMSLDetector", "AdaptiveFusion", "AnomalyDetector", "BASELINES", "ConvAEDetector",
           "ConvAutoencoder", "KerasDetector", "KernelPCADetector", "LSTMAEDetector", "LSTMAutoencoder",
           "METRIC_KEYS", "MemoryModule", "OCSVMDetector", "build_baseline", "detection_metrics"]
