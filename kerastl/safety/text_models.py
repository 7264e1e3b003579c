"""The NLP setting's model: a keras-hub `BertBackbone` with a classification head, and the
WordPiece sentence encoder that turns texts into its token ids.

- `BertSentenceEncoder`: texts -> `[CLS] wordpieces [SEP]` ids, padded with 0 (`[PAD]`) to
  `sequence_length` (keras-hub's `BertTokenizer` + `StartEndPacker`). Its vocabulary is
  computed from the teacher's sentences (`wordpiece_vocabulary`) or read from a keras-hub
  BERT preset on disk (`from_preset`).
- `bert_classifier`: token ids `[batch, tokens]` -> logits, through `BertInputs` (the
  backbone's segment ids and padding mask, derived from the ids), the backbone's pooled
  `[CLS]` output, dropout and a dense head. One token-id input keeps the model usable by the
  same training loop, slicing and attacks as the image setting. ReMoS profiles and slices
  the dense kernels inside the backbone's `TransformerEncoder`s (see
  `kerastl.safety.coverage`).

Example:
>>> encoder = BertSentenceEncoder(wordpiece_vocabulary(texts, 4000), sequence_length=48)   # doctest: +SKIP
>>> model = bert_classifier(small_bert_backbone(encoder.vocabulary_size(), 48), num_classes=2)
...                                                                                     # doctest: +SKIP
>>> model(encoder(["a moving film"])).shape                                             # doctest: +SKIP
TensorShape([1, 2])
"""

from __future__ import annotations

import os

import keras
import keras_hub
from keras import ops

from kerastl.errors import InputError

#: keras-hub BERT's special tokens; `[PAD]` first so that padding is id 0.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def wordpiece_vocabulary(texts: list[str], vocabulary_size: int, extra_tokens: tuple[str, ...] = ()) -> list[str]:
    """A lower-cased WordPiece vocabulary of at most `vocabulary_size` entries learnt from
    `texts` (keras-hub's trainer, which runs on tensorflow-text): the special tokens, then
    word pieces, then `extra_tokens` the corpus lacks as whole tokens (e.g. a trigger word)."""
    import tensorflow as tf

    if vocabulary_size <= len(SPECIAL_TOKENS) + len(extra_tokens):
        raise InputError(f"--vocabulary-size {vocabulary_size}: expected more than "
                         f"{len(SPECIAL_TOKENS) + len(extra_tokens)} (the special and extra tokens)")
    data = tf.data.Dataset.from_tensor_slices(list(texts)).batch(1000)
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        data, vocabulary_size - len(extra_tokens), lowercase=True, reserved_tokens=list(SPECIAL_TOKENS))
    return vocabulary + [token for token in extra_tokens if token not in vocabulary]


@keras.saving.register_keras_serializable("kerastl")
class BertSentenceEncoder(keras.layers.Layer):
    """Strings `[batch]` -> int32 token ids `[batch, sequence_length]`: lower-cased WordPiece
    pieces between `[CLS]` and `[SEP]`, truncated or padded with `[PAD]` (id 0).

    Example:
    >>> vocabulary = list(SPECIAL_TOKENS) + ["a", "good", "film", "##s"]
    >>> BertSentenceEncoder(vocabulary, sequence_length=6)(["A good films"]).numpy().tolist()
    [[2, 5, 6, 7, 8, 3]]
    """

    def __init__(self, vocabulary: list[str], sequence_length: int, lowercase: bool = True, **kwargs):
        super().__init__(**kwargs)
        self._allow_non_tensor_positional_args = True  # a Python list of strings is a valid input
        self.vocabulary = list(vocabulary)
        self.sequence_length = int(sequence_length)
        self.lowercase = bool(lowercase)
        self.tokenizer = keras_hub.models.BertTokenizer(vocabulary=self.vocabulary, lowercase=self.lowercase)
        if self.tokenizer.pad_token_id != 0:
            raise InputError(f"the vocabulary has [PAD] at id {self.tokenizer.pad_token_id}; expected id 0 "
                             "(padding is id 0 throughout kerastl)")
        self.packer = keras_hub.layers.StartEndPacker(
            self.sequence_length, start_value=self.tokenizer.cls_token_id, end_value=self.tokenizer.sep_token_id,
            pad_value=0, return_padding_mask=False)

    @classmethod
    def from_preset(cls, preset_dir: str, sequence_length: int, option: str = "--bert-preset") -> "BertSentenceEncoder":
        """The encoder of a keras-hub BERT preset folder (its tokenizer's vocabulary)."""
        check_preset(preset_dir, option)
        tokenizer = keras_hub.models.BertTokenizer.from_preset(preset_dir)
        return cls(tokenizer.get_vocabulary(), sequence_length, lowercase=tokenizer.lowercase)

    def call(self, texts):
        return ops.cast(self.packer(self.tokenizer(texts)), "int32")

    def compute_output_spec(self, texts):
        return keras.KerasTensor((texts.shape[0], self.sequence_length), dtype="int32")

    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def get_vocabulary(self) -> list[str]:
        return list(self.vocabulary)

    def token_to_id(self, token: str) -> int:
        return int(self.tokenizer.token_to_id(token))

    def special_token_ids(self) -> list[int]:
        """Ids of the special tokens (`[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`)."""
        return [self.token_to_id(token) for token in SPECIAL_TOKENS if token in self.vocabulary]

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "sequence_length": self.sequence_length,
                "lowercase": self.lowercase}


@keras.saving.register_keras_serializable("kerastl")
class BertInputs(keras.layers.Layer):
    """Token ids `[batch, tokens]` (0 = padding) -> the dict a keras-hub `BertBackbone`
    takes: the ids, segment ids (all 0: one sentence) and the padding mask (`ids != 0`).

    Example:
    >>> inputs = BertInputs()(np.array([[2, 7, 3, 0]]))
    >>> inputs["padding_mask"].numpy().tolist(), inputs["segment_ids"].numpy().tolist()
    ([[1, 1, 1, 0]], [[0, 0, 0, 0]])
    """

    def call(self, token_ids):
        token_ids = ops.cast(token_ids, "int32")  # training pipelines may hand ids over as floats
        return {"token_ids": token_ids, "segment_ids": ops.zeros_like(token_ids),
                "padding_mask": ops.cast(ops.not_equal(token_ids, 0), "int32")}


def check_preset(preset_dir: str, option: str = "--bert-preset") -> str:
    """Raises `InputError` unless `preset_dir` is a folder with a keras-hub preset's config."""
    if not os.path.isfile(os.path.join(preset_dir, "config.json")):
        raise InputError(f"{option} {preset_dir}: expected a keras-hub BERT preset folder (config.json, "
                         "model.weights.h5, tokenizer.json and assets/tokenizer/vocabulary.txt)")
    return preset_dir


def small_bert_backbone(vocabulary_size: int, sequence_length: int, num_layers: int = 2, hidden_dim: int = 64,
                        num_heads: int = 2, intermediate_dim: int = 128, dropout: float = 0.1,
                        preset_dir: str | None = None) -> keras.Model:
    """keras-hub's `BertBackbone` (layer name `backbone`): a fresh one of the given size, or
    the pretrained one of a preset folder (then the size arguments are the preset's)."""
    if preset_dir is not None:
        check_preset(preset_dir)
        try:
            backbone = keras_hub.models.BertBackbone.from_preset(preset_dir, name="backbone")
        except (ValueError, KeyError, OSError) as err:  # bad JSON, another model's preset, a missing file
            raise InputError(f"--bert-preset {preset_dir}: does not load as a keras-hub BertBackbone "
                             f"({type(err).__name__}: {str(err).strip().splitlines()[0][:160] if str(err) else ''})"
                             ) from None
        if backbone.max_sequence_length < sequence_length or backbone.vocabulary_size != vocabulary_size:
            raise InputError(f"--bert-preset {preset_dir}: its backbone takes {backbone.max_sequence_length} tokens "
                             f"of a {backbone.vocabulary_size}-entry vocabulary; expected at least "
                             f"{sequence_length} tokens of the tokenizer's {vocabulary_size}")
        return backbone
    return keras_hub.models.BertBackbone(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
                                         hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, dropout=dropout,
                                         max_sequence_length=sequence_length, name="backbone")


def bert_classifier(backbone: keras.Model, sequence_length: int, num_classes: int = 2, dropout: float = 0.1,
                    name: str = "bert_classifier") -> keras.Model:
    """Token ids `[batch, sequence_length]` (0 = padding) -> class logits `[batch, num_classes]`
    from the backbone's pooled `[CLS]` output."""
    token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    outputs = backbone(BertInputs(name="bert_inputs")(token_ids))
    pooled = keras.layers.Dropout(dropout, name="pooled_dropout")(outputs["pooled_output"])
    logits = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                                name="logits")(pooled)
    return keras.Model(token_ids, logits, name=name)


def export_text_classifier(model: keras.Model, encoder: BertSentenceEncoder, export_dir: str, app: str,
                           version: int | None = None, overwrite: bool = False, metadata: dict | None = None) -> str:
    """Exports `encoder` + `model` as one SavedModel: input `texts` (string `[batch]`),
    outputs `probabilities` (float32 `[batch, C]`) and `classes` (int64 `[batch]`).

    Example:
    >>> export_text_classifier(student, encoder, "saved_models", "remos")   # doctest: +SKIP
    'saved_models/remos/1'
    """
    import tensorflow as tf

    from kerastl.export import export_model, version_dir

    path, version = version_dir(export_dir, app, version, overwrite)
    texts = keras.Input(shape=(), dtype="string", name="texts")
    serving = keras.Model(texts, model(encoder(texts)), name=f"{model.name}_serving")

    def outputs(texts):
        probabilities = tf.nn.softmax(tf.cast(serving(texts, training=False), tf.float32), axis=-1)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    facts = {"app": app, "version": version, "task": "text classification",
             "outputs": {"probabilities": "float32 [batch, classes]", "classes": "int64 [batch]"},
             **(metadata or {})}
    return export_model(serving, path, {"texts": tf.TensorSpec([None], tf.string)}, outputs, facts, overwrite)
