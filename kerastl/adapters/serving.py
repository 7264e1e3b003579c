"""A trained recogniser as a SavedModel for TF Serving that transcribes raw 16 kHz waveforms.

Example:
>>> export_recognizer(fused.recognizer, ro_vocab, "saved_models/simadapter/1")  # doctest: +SKIP
'saved_models/simadapter/1'
"""

from __future__ import annotations

import tensorflow as tf

from kerastl.adapters.ctc import greedy_decode_graph
from kerastl.adapters.model import CTCRecognizer
from kerastl.data.audio import SAMPLE_RATE, LogMelFrontEnd
from kerastl.export import export_model

def export_recognizer(recognizer: CTCRecognizer, vocabulary, path: str, overwrite: bool = False,
                      metadata: dict | None = None) -> str:
    """Exports `recognizer` as a SavedModel for TF Serving at `path` (a version folder).

    Input `waveform`: float32 `[batch, samples]`, 16 kHz audio in [-1, 1] (a batch of
    different lengths is zero-padded at the end). Outputs `logits` (float32 `[batch, frames,
    vocabulary size]`, blank = 0), `logit_lengths` (int32 `[batch]`) and `text` (string
    `[batch]`, greedy CTC decoding). The log-mel front end is inside, the same functions as
    the training pipeline's.
    """
    front_end = LogMelFrontEnd(name="front_end")

    def outputs(waveform):
        features, frame_lengths = front_end(waveform)
        result = recognizer({"features": features, "feature_lengths": frame_lengths}, training=False)
        logits = tf.cast(result["logits"], tf.float32)
        ids = greedy_decode_graph(logits, result["logit_lengths"])
        return {"logits": logits, "logit_lengths": tf.cast(result["logit_lengths"], tf.int32),
                "text": vocabulary.tf_decode(ids)}

    facts = {"task": "speech recognition (CTC)", "sample_rate": SAMPLE_RATE, "language": recognizer.language,
             "mode": recognizer.mode, "vocabulary": vocabulary.characters,
             "outputs": {"logits": "float32 [batch, frames, vocabulary]", "logit_lengths": "int32 [batch]",
                         "text": "string [batch]"}, **(metadata or {})}
    return export_model(recognizer, path, {"waveform": tf.TensorSpec([None, None], tf.float32)}, outputs, facts,
                        overwrite)
