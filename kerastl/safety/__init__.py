"""Safe transfer: ReMoS relevant model slicing against defect inheritance.

- `coverage`: neuron coverage profiling (`ChannelCoverage`, `TokenCoverage`, `profile_coverage`).
- `slicing`: ordinal scores, `remos_slice`, the `ReMoSSlicing` callback.
- `baselines`: finetune, magprune, scratch, reinit and remos students (`prepare_student`).
- `attacks`: BadNets backdoor poisoning (image patch, rare token), penultimate-guided PGD.
- `dir`: accuracy and the defect inheritance rate.
- `tasks`, `text_tasks`, `experiment`: the offline teacher -> student settings (digits,
  rated sentences) and one measured transfer.
- `teachers`: a teacher from a `.keras` file or a keras.applications network.
- `text_models`: a small BERT-style classifier whose dense layers are graph nodes.
- `report`: ACC vs DIR and slice plots.

Example:
>>> masks = remos_slice(teacher, x_student, ratio=0.03)                       # doctest: +SKIP
>>> student = student_from_teacher(teacher, num_classes=10)                   # doctest: +SKIP
>>> student.compile(...)                                                      # doctest: +SKIP
>>> student.fit(x_student, y_student, callbacks=[ReMoSSlicing(masks)])        # doctest: +SKIP
"""

from kerastl.safety.attacks import (BackdoorTrigger, TokenTrigger, feature_extractor, penultimate_pgd,
                                    poison_backdoor)
from kerastl.safety.baselines import METHODS, magnitude_masks, prepare_student, student_from_teacher
from kerastl.safety.coverage import (ChannelCoverage, LayerCoverage, TokenCoverage, profile_coverage,
                                     sliceable_layers)
from kerastl.safety.dir import accuracy, adversarial_dir, backdoor_dir
from kerastl.safety.slicing import ReMoSSlicing, apply_masks, kept_share, ordinal_scores, remos_slice

__all__ = [
    "METHODS", "BackdoorTrigger", "ChannelCoverage", "LayerCoverage", "ReMoSSlicing", "TokenCoverage", "TokenTrigger",
    "accuracy", "adversarial_dir", "apply_masks", "backdoor_dir", "feature_extractor", "kept_share",
    "magnitude_masks", "ordinal_scores", "penultimate_pgd", "poison_backdoor", "prepare_student",
    "profile_coverage", "remos_slice", "sliceable_layers", "student_from_teacher",
]
