"""Semi-supervised learning: `SemiSupervisedModel`, thresholds and the TorchSSL algorithms.

- `SemiSupervisedModel(network, algorithm)`: trains with `model.fit` on the stream of
  `kerastl.data.pipeline.ssl_stream`; evaluates and predicts with EMA weights.
- `FixedThreshold`, `CurriculumThreshold` (FlexMatch's CPL).
- Algorithms (`build_algorithm(name, ...)`): flexmatch, fixmatch, pseudolabel,
  flex_pseudolabel, uda, flex_uda, pimodel, meanteacher, vat, mixmatch, remixmatch,
  freematch, softmatch, supervised. `algorithm_names()` and `algorithm_spec(name)` read
  the registry; a new algorithm is a short `SSLAlgorithm` subclass (see
  `algorithms/base.py`) registered with `register_algorithm` (see `algorithms/registry.py`).
- `torchssl_optimizer`, `SGDWithL2`, `CosineSchedule`: TorchSSL's optimizer and schedule.
- `MultiWorkerMirroredStrategy`: tf.distribute's, with the fix `model.fit` needs on several
  workers.
"""

from kerastl.ssl.algorithms import algorithm_names, algorithm_spec, build_algorithm, register_algorithm
from kerastl.ssl.model import MultiWorkerMirroredStrategy, SemiSupervisedModel
from kerastl.ssl.optim import CosineSchedule, SGDWithL2, torchssl_optimizer
from kerastl.ssl.thresholds import CurriculumThreshold, FixedThreshold

__all__ = ["CosineSchedule", "CurriculumThreshold", "FixedThreshold", "MultiWorkerMirroredStrategy", "SGDWithL2",
           "SemiSupervisedModel", "algorithm_names", "algorithm_spec", "build_algorithm", "register_algorithm",
           "torchssl_optimizer"]
