"""Safe transfer: ReMoS relevant model slicing against defect inheritance.

- `coverage`: neuron coverage profiling (`ChannelCoverage`, `TokenCoverage`, `profile_coverage`),
  reaching nested layers such as the dense kernels inside a keras-hub `TransformerEncoder`
  (`tapped_calls`, layer paths, `find_layer`).
- `slicing`: ordinal scores, `remos_slice` (the reference's ranking and threshold by default,
  `ranking="exact-share"` for exactly the `ratio` share), the `ReMoSSlicing` callback
  (`ratio` = share removed).
- `baselines`: the registry of student methods (`METHODS`: finetune, magprune, scratch, reinit,
  remos; what each removes before fine-tuning) and `prepare_student`.
- `attacks`: BadNets backdoor poisoning (image patch, rare token), penultimate-guided PGD
  (images) and HotFlip (token ids).
- `dir`: accuracy, the defect inheritance rate and its floor.
- `tasks`, `text_tasks`, `experiment`: the offline teacher -> student settings (digits,
  rated sentences) and one measured transfer.
- `teachers`: a teacher from a `.keras` file or a keras.applications network.
- `text_models`: a keras-hub `BertBackbone` classifier and its WordPiece sentence encoder
  (imported here, so that `import kerastl.safety` registers them for `keras.models.load_model`).
- `report`: ACC vs DIR and slice plots.

Example:
>>> masks = remos_slice(teacher, x_student, ratio=0.03)                       # doctest: +SKIP
>>> student = student_from_teacher(teacher, num_classes=10)                   # doctest: +SKIP
>>> student.compile(...)                                                      # doctest: +SKIP
>>> student.fit(x_student, y_student, callbacks=[ReMoSSlicing(masks)])        # doctest: +SKIP
"""

from kerastl.safety.attacks import (BackdoorTrigger, TokenTrigger, feature_extractor, penultimate_hotflip,
                                    penultimate_pgd, pixel_budget, poison_backdoor, random_substitutions)
from kerastl.safety.baselines import (METHODS, SliceOptions, StudentMethod, get_method, magnitude_masks,
                                      prepare_student, student_from_teacher)
from kerastl.safety.coverage import (ChannelCoverage, LayerCoverage, TokenCoverage, find_layer, profile_coverage,
                                     sliceable_layers, tapped_calls, token_table)
from kerastl.safety.dir import accuracy, adversarial_dir, backdoor_dir, backdoor_dir_clean_correct, false_target_rate
from kerastl.safety.slicing import (ReMoSSlicing, apply_masks, kept_share, ordinal_scores, remos_slice, slice_masks,
                                    threshold_masks)
from kerastl.safety.text_models import BertInputs, BertSentenceEncoder, bert_classifier, small_bert_backbone

__all__ = [
    "METHODS", "BackdoorTrigger", "BertInputs", "BertSentenceEncoder", "ChannelCoverage", "LayerCoverage",
    "ReMoSSlicing", "SliceOptions", "StudentMethod", "TokenCoverage", "TokenTrigger", "accuracy", "adversarial_dir",
    "apply_masks", "backdoor_dir", "backdoor_dir_clean_correct", "bert_classifier", "false_target_rate",
    "feature_extractor", "find_layer", "get_method", "kept_share", "magnitude_masks", "ordinal_scores",
    "penultimate_hotflip", "penultimate_pgd", "pixel_budget", "poison_backdoor", "prepare_student", "profile_coverage",
    "random_substitutions", "remos_slice", "slice_masks", "sliceable_layers", "small_bert_backbone",
    "student_from_teacher", "tapped_calls", "threshold_masks", "token_table",
]
