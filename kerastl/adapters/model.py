"""Multilingual CTC speech recognition with per-language adapters, heads and SimAdapter fusion.

`MultilingualASR` holds the layers; it is not itself a Keras model:
- one shared `ASREncoder` (the backbone: conv subsampling + Transformer layers),
- per language a CTC head `head_<lang>` (Dense to the language's vocabulary, blank = 0) and
  one `Adapter` after every encoder layer, `adapter_<lang>_<i>`,
- any extra adapter set by name (e.g. `add_adapters("meta")` for MetaAdapter's shared
  initialisation), named `adapter_<name>_<i>` the same way,
- per target language a `SimAdapter` after every encoder layer, `simadapter_<target>_<i>`,
  fusing the adapters of chosen source languages and the target's own (last; the
  fusion-guide loss points at it).

`recognizer(lang, mode)` returns a `CTCRecognizer`: a keras.Model over the SAME layer
objects, so training one recogniser changes the weights every other recogniser sees. Which
weights train is a property of the layers (`layer.trainable`), set through `train_only` /
`set_trainable` before compiling. Modes:
- "plain": encoder -> head (pre-training, scratch, head-only and full fine-tuning),
- "adapter": encoder with the language's adapters (or `adapter=` another set) -> head,
- "simadapter": encoder with `SimAdapter(adapters of sources + own)` after every layer -> head.

Example (two-stage adapters, then SimAdapter fusion for ro):
>>> asr = MultilingualASR({"ru": 40, "it": 30, "ro": 35}, **MODEL_SIZES["smoke"])
>>> asr.train_only(backbone=True, heads=["ru", "it"])        # stage 0: multilingual pre-training
>>> ru = asr.recognizer("ru", "plain")                       # ...fit ru and it in turn
>>> asr.train_only(adapters=["ro"], heads=["ro"])            # the ro adapters and head only
>>> ro = asr.recognizer("ro", "adapter")
>>> round(ro.trainable_share(), 3)
0.047
>>> ro.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> ro.fit(speech_dataset(records, vocabulary, 16, training=True), epochs=5)   # doctest: +SKIP
>>> fusion_layers = asr.add_fusion("ro", sources=["ru", "it"], guide_weight=0.1)
>>> asr.train_only(fusions=["ro"])
>>> fused = asr.recognizer("ro", "simadapter")
>>> fused.fusion_languages
['ru', 'it', 'ro']
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerastl.adapters.adapter import Adapter
from kerastl.adapters.ctc import beam_search_decode, ctc_loss, greedy_decode
from kerastl.adapters.simadapter import SimAdapter
from kerastl.errors import InputError
from kerastl.nets.asr_encoder import ASREncoder, subsampled_lengths

MODES = ("plain", "adapter", "simadapter")
GROUPS = ("backbone", "adapters", "head", "fusion")
# Ready-made sizes for library use: a tiny model, a 4-layer CPU model and the paper's (12 layers,
# d 256, 4 heads, FFN 2048, adapters 64). apps.simadapter's presets set their own sizes.
MODEL_SIZES = {
    "smoke": dict(num_layers=2, hidden_dim=64, num_heads=4, intermediate_dim=256, adapter_dim=32, dropout=0.1),
    "cpu": dict(num_layers=4, hidden_dim=144, num_heads=4, intermediate_dim=512, adapter_dim=64, dropout=0.1),
    "paper": dict(num_layers=12, hidden_dim=256, num_heads=4, intermediate_dim=2048, adapter_dim=64, dropout=0.1),
}
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"


def _size(variable) -> int:
    return int(np.prod(variable.shape))


def _batch_inputs(inputs):
    """(features, feature_lengths or None) from a dict batch or a (features, lengths) pair."""
    if isinstance(inputs, dict):
        return inputs["features"], inputs.get("feature_lengths")
    if isinstance(inputs, (list, tuple)):
        return inputs[0], inputs[1] if len(inputs) > 1 else None
    return inputs, None


@keras.saving.register_keras_serializable("kerastl")
class CTCRecognizer(keras.Model):
    """A CTC speech recogniser for one language over (possibly shared) layers.

    Args:
        encoder: the `ASREncoder`.
        head: Dense layer from the encoder width to the vocabulary size (blank = id 0).
        adapters: ordered mapping name -> list of `Adapter` (one per encoder layer). Without
            `fusion` at most one entry, applied after every encoder layer; with `fusion`, the
            adapters fused (sources first, the target's own last).
        fusion: list of `SimAdapter` (one per encoder layer), or None.
        language: the language this recogniser transcribes (informational).

    Input: the dict batch of `kerastl.data.speech.speech_dataset` (`features` [B, T, 80],
    `feature_lengths` [B]; `labels` [B, L] and `label_lengths` [B] for training) or a
    `(features, feature_lengths)` pair. Output: `{"logits": [B, T', V], "logit_lengths": [B]}`.
    `fit` / `evaluate` minimise and report the mean CTC loss (`ctc_loss`) plus the layers'
    losses (SimAdapter's regulariser and guide loss) as `loss`.

    Usually built by `MultilingualASR.recognizer`. Example:
    >>> recognizer = asr.recognizer("ro", "adapter")                         # doctest: +SKIP
    >>> recognizer.compile(optimizer=keras.optimizers.Adam(1e-3))            # doctest: +SKIP
    >>> recognizer.fit(train_batches, validation_data=dev_batches, epochs=3) # doctest: +SKIP
    >>> references, hypotheses = recognizer.decode_dataset(test_batches)     # doctest: +SKIP
    """

    # TF's CTC kernel has no XLA implementation: keep jit_compile="auto" off on GPUs too.
    supports_jit = False

    def __init__(self, encoder: ASREncoder, head: keras.layers.Dense, adapters: dict | None = None,
                 fusion: Sequence[SimAdapter] | None = None, language: str | None = None, **kwargs):
        super().__init__(**kwargs)
        adapters = dict(adapters or {})
        if fusion is None and len(adapters) > 1:
            raise ValueError(f"adapters {list(adapters)}: several adapter sets need a fusion (SimAdapter) list")
        for name, stack in adapters.items():
            if len(stack) != encoder.num_layers:
                raise ValueError(f"adapters {name!r}: {len(stack)} adapters for {encoder.num_layers} encoder layers")
        if fusion is not None and len(fusion) != encoder.num_layers:
            raise ValueError(f"fusion: {len(fusion)} SimAdapter layers for {encoder.num_layers} encoder layers")
        self.encoder = encoder
        self.head = head
        self.adapter_names = list(adapters)
        self.adapter_stacks = [list(stack) for stack in adapters.values()]
        self.fusion = None if fusion is None else list(fusion)
        self.language = language
        self.head_dropout = keras.layers.Dropout(encoder.dropout, name="head_dropout")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ctc_tracker = keras.metrics.Mean(name="ctc_loss")
        self._forward = None  # the traced inference graph, made on first use (`forward`)
        self.build()

    @property
    def mode(self) -> str:
        return "simadapter" if self.fusion is not None else "adapter" if self.adapter_stacks else "plain"

    @property
    def fusion_languages(self) -> list[str]:
        """The adapters a SimAdapter recogniser attends over, in attention order."""
        return list(self.adapter_names) if self.fusion is not None else []

    def build(self, input_shape=None):
        if not self.encoder.built:
            self.encoder.build()
        hidden = (None, None, self.encoder.hidden_dim)
        for stack in self.adapter_stacks:
            for adapter in stack:
                if not adapter.built:
                    adapter.build(hidden)
        for layer in self.fusion or []:
            if not layer.built:
                layer.build(hidden, (None, None, len(self.adapter_stacks), self.encoder.hidden_dim))
        if not self.head.built:
            self.head.build(hidden)
        self.built = True

    def _after_layer(self, i, x, padding_mask, training, feed_forward_input):
        if self.fusion is not None:
            # The reference's residual: the frozen layer's own feed-forward input LN(h).
            outputs = tf.stack([stack[i](x) for stack in self.adapter_stacks], axis=2)
            return self.fusion[i](x, outputs, feed_forward_input, padding_mask=padding_mask, training=training)
        if self.adapter_stacks:
            return self.adapter_stacks[0][i](x)
        return x

    def call(self, inputs, training=None):
        features, lengths = _batch_inputs(inputs)
        hidden, hidden_lengths = self.encoder.encode(
            features, lengths, after_layer=self._after_layer if self.adapter_stacks else None, training=training)
        logits = self.head(self.head_dropout(hidden, training=training))
        return {"logits": logits, "logit_lengths": hidden_lengths}

    # -- training ------------------------------------------------------------------------
    def batch_loss(self, batch, training: bool = True):
        """(total loss, mean CTC loss) of a dict batch; total adds the layers' losses."""
        outputs = self(batch, training=training)
        ctc = tf.reduce_mean(ctc_loss(batch["labels"], batch["label_lengths"], outputs["logits"],
                                      outputs["logit_lengths"]))
        extra = self.losses
        total = ctc + tf.add_n([tf.cast(x, ctc.dtype) for x in extra]) if extra else ctc
        return total, ctc

    def train_step(self, data):
        data = data[0] if isinstance(data, tuple) else data
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, ctc = self.batch_loss(data, training=True)
            scaled = self.optimizer.scale_loss(loss) if self.optimizer is not None else loss
        if variables:
            gradients = tape.gradient(scaled, variables)
            self.optimizer.apply_gradients(zip(gradients, variables))
        return self._track(loss, ctc)

    def test_step(self, data):
        data = data[0] if isinstance(data, tuple) else data
        return self._track(*self.batch_loss(data, training=False))

    def _track(self, loss, ctc):
        self.loss_tracker.update_state(loss)
        self.ctc_tracker.update_state(ctc)
        return {"loss": self.loss_tracker.result(), "ctc_loss": self.ctc_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.ctc_tracker]

    # -- parameters ----------------------------------------------------------------------
    def parameter_counts(self) -> tuple[int, int]:
        """(trained, total) parameters of this recogniser (SimAdapter bookkeeping excluded)."""
        bookkeeping = {id(v) for layer in self.fusion or [] for v in layer.state_variables}
        trained = sum(_size(v) for v in self.trainable_weights if id(v) not in bookkeeping)
        total = sum(_size(v) for v in self.weights if id(v) not in bookkeeping)
        return trained, total

    def trainable_share(self) -> float:
        """Share of this recogniser's parameters that training changes (trainable / total)."""
        trained, total = self.parameter_counts()
        return trained / total

    # -- decoding ------------------------------------------------------------------------
    def forward(self, features, lengths) -> dict:
        """Inference outputs of one batch through a single traced graph: any batch size and
        number of frames (`predict_on_batch` would retrace for every new batch shape)."""
        if self._forward is None:
            signature = [tf.TensorSpec([None, None, self.encoder.input_dim], tf.float32),
                         tf.TensorSpec([None], tf.int32)]
            self._forward = tf.function(
                lambda f, n: self({"features": f, "feature_lengths": n}, training=False), input_signature=signature)
        return self._forward(tf.cast(features, tf.float32), tf.cast(lengths, tf.int32))

    def decode(self, batch, beam_width: int = 0) -> list[list[int]]:
        """Token ids per utterance: greedy (beam_width 0) or CTC beam search."""
        features, lengths = _batch_inputs(batch)
        if lengths is None:
            lengths = tf.fill(tf.shape(features)[:1], tf.shape(features)[1])
        outputs = self.forward(features, lengths)
        if beam_width:
            return beam_search_decode(outputs["logits"], outputs["logit_lengths"], beam_width)
        return greedy_decode(outputs["logits"], outputs["logit_lengths"])

    def decode_dataset(self, dataset, beam_width: int = 0) -> tuple[list[list[int]], list[list[int]]]:
        """(reference ids, hypothesis ids) over a dataset of dict batches with labels."""
        references, hypotheses = [], []
        for batch in dataset:
            labels, lengths = np.asarray(batch["labels"]), np.asarray(batch["label_lengths"])
            references += [row[:n].tolist() for row, n in zip(labels, lengths)]
            hypotheses += self.decode(batch, beam_width)
        return references, hypotheses

    def fusion_attention(self, dataset) -> np.ndarray:
        """SimAdapter attention per encoder layer over `fusion_languages`, `[layers, S]`,
        averaged over every valid frame of the dataset (for the borrowing plots)."""
        if self.fusion is None:
            raise ValueError(f"recogniser {self.name!r} ({self.mode}) has no SimAdapter fusion")
        total, frames = np.zeros((len(self.fusion), len(self.adapter_stacks))), 0
        for batch in dataset:
            features, lengths = _batch_inputs(batch)
            if lengths is None:
                lengths = np.full(features.shape[0], features.shape[1], "int32")
            self.forward(features, lengths)
            count = int(np.sum(subsampled_lengths(np.asarray(lengths))))
            total += count * np.stack([layer.last_attention for layer in self.fusion])
            frames += count
        return total / max(frames, 1)

    def inference_model(self) -> keras.Model:
        """A functional keras.Model `{"features", "feature_lengths"} -> {"logits", "logit_lengths"}`
        over this recogniser's layers (what an export wraps)."""
        features = keras.Input((None, self.encoder.input_dim), name="features")
        lengths = keras.Input((), dtype="int32", name="feature_lengths")
        outputs = self({"features": features, "feature_lengths": lengths})
        return keras.Model({"features": features, "feature_lengths": lengths}, outputs,
                           name=f"{self.name}_inference")

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        config = super().get_config()
        config.update(
            encoder=serialize(self.encoder), head=serialize(self.head),
            adapters={name: [serialize(a) for a in stack] for name, stack in zip(self.adapter_names,
                                                                                 self.adapter_stacks)},
            fusion=None if self.fusion is None else [serialize(layer) for layer in self.fusion],
            language=self.language)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        config["encoder"] = deserialize(config["encoder"])
        config["head"] = deserialize(config["head"])
        config["adapters"] = {name: [deserialize(a) for a in stack] for name, stack in config["adapters"].items()}
        if config.get("fusion") is not None:
            config["fusion"] = [deserialize(layer) for layer in config["fusion"]]
        return cls(**config)


class MultilingualASR:
    """The layers of a multilingual CTC recogniser with adapters (see the module docstring).

    Args:
        vocab_sizes: language -> vocabulary size (including the blank at id 0).
        num_layers, hidden_dim, num_heads, intermediate_dim, dropout: the `ASREncoder`.
        adapter_dim: the adapters' bottleneck (paper: 64 low-resource, 128 rich-resource).
        adapter_dims: optional per-language bottleneck overriding `adapter_dim`.
        input_dim: features per frame (80 log-mel bins).

    Example:
    >>> asr = MultilingualASR({"ru": 40, "ro": 35}, num_layers=2, hidden_dim=64)
    >>> outputs = asr.recognizer("ro", "adapter")({"features": np.zeros((1, 100, 80), "float32")})
    >>> tuple(outputs["logits"].shape), outputs["logit_lengths"].numpy().tolist()
    ((1, 24, 35), [24])
    """

    def __init__(self, vocab_sizes: dict[str, int], num_layers: int = 2, hidden_dim: int = 64, num_heads: int = 4,
                 intermediate_dim: int = 256, dropout: float = 0.1, adapter_dim: int = 64,
                 adapter_dims: dict[str, int] | None = None, input_dim: int = 80):
        self.encoder_config = dict(num_layers=int(num_layers), hidden_dim=int(hidden_dim), num_heads=int(num_heads),
                                   intermediate_dim=int(intermediate_dim), dropout=float(dropout),
                                   input_dim=int(input_dim))
        self.adapter_dim = int(adapter_dim)
        self.encoder = ASREncoder(**self.encoder_config, name="encoder")
        self.encoder.build()
        self.vocab_sizes: dict[str, int] = {}
        self.heads: dict[str, keras.layers.Dense] = {}
        self.adapters: dict[str, list[Adapter]] = {}
        self.fusions: dict[str, list[SimAdapter]] = {}
        self.fusion_sources: dict[str, list[str]] = {}
        for lang, size in vocab_sizes.items():
            self.add_language(lang, size, (adapter_dims or {}).get(lang))

    @property
    def num_layers(self) -> int:
        return self.encoder.num_layers

    @property
    def hidden_dim(self) -> int:
        return self.encoder.hidden_dim

    @property
    def languages(self) -> list[str]:
        return list(self.heads)

    # -- building ------------------------------------------------------------------------
    def add_language(self, lang: str, vocab_size: int, adapter_dim: int | None = None) -> None:
        """Adds a CTC head `head_<lang>` and adapters `adapter_<lang>_<i>` for a new language."""
        if lang in self.heads:
            raise ValueError(f"language {lang!r} already has a head")
        if int(vocab_size) < 2:
            raise ValueError(f"language {lang!r}: vocabulary size {vocab_size} (blank included) must be >= 2")
        head = keras.layers.Dense(int(vocab_size), name=f"head_{lang}")
        head.build((None, None, self.hidden_dim))
        self.heads[lang] = head
        self.vocab_sizes[lang] = int(vocab_size)
        if lang not in self.adapters:
            self.add_adapters(lang, adapter_dim)

    def add_adapters(self, name: str, bottleneck_dim: int | None = None) -> list[Adapter]:
        """An adapter after every encoder layer, `adapter_<name>_<i>` (e.g. name "meta")."""
        if name in self.adapters:
            raise ValueError(f"adapters {name!r} already exist")
        stack = [Adapter(int(bottleneck_dim or self.adapter_dim), name=f"adapter_{name}_{i}")
                 for i in range(self.num_layers)]
        for adapter in stack:
            adapter.build((None, None, self.hidden_dim))
        self.adapters[name] = stack
        return stack

    def add_fusion(self, target: str, sources: Sequence[str], temperature: float = 1.0,
                   stability_weight: float = 0.01, guide_weight: float = 0.1, dropout: float = 0.0,
                   replace: bool = False) -> list[SimAdapter]:
        """SimAdapter layers `simadapter_<target>_<i>` over the adapters of `sources` and the
        target's own (last, the guide loss's label). `replace` drops an existing fusion."""
        names = [s for s in sources if s != target] + [target]
        unknown = [s for s in names if s not in self.adapters]
        if unknown:
            raise InputError(f"SimAdapter for {target!r}: no adapters for {', '.join(unknown)} "
                             f"(known: {', '.join(self.adapters)})")
        if len(names) < 2:
            raise InputError(f"SimAdapter for {target!r}: expected at least one source language besides the target")
        if target in self.fusions and not replace:
            raise ValueError(f"a fusion for {target!r} exists (over {self.fusion_sources[target]}); pass replace=True")
        layers = [SimAdapter(temperature=temperature, stability_weight=stability_weight, guide_weight=guide_weight,
                             guide_index=len(names) - 1, dropout=dropout, name=f"simadapter_{target}_{i}")
                  for i in range(self.num_layers)]
        for layer in layers:
            layer.build((None, None, self.hidden_dim), (None, None, len(names), self.hidden_dim))
        self.fusions[target] = layers
        self.fusion_sources[target] = names
        return layers

    def recognizer(self, lang: str, mode: str = "adapter", adapter: str | None = None,
                   sources: Sequence[str] | None = None, name: str | None = None) -> CTCRecognizer:
        """A `CTCRecognizer` for `lang` sharing this model's layers.

        mode "plain" (no adapters), "adapter" (`adapter`'s set, default the language's own)
        or "simadapter" (the fusion of `lang`, created over `sources` if it does not exist).
        """
        if lang not in self.heads:
            raise InputError(f"language {lang!r}: no head (known: {', '.join(self.heads)})")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        adapters, fusion = {}, None
        if mode == "adapter":
            adapter = adapter or lang
            if adapter not in self.adapters:
                raise InputError(f"adapters {adapter!r}: not in this model (known: {', '.join(self.adapters)})")
            adapters = {adapter: self.adapters[adapter]}
        elif mode == "simadapter":
            if lang not in self.fusions:
                if not sources:
                    raise InputError(f"language {lang!r} has no SimAdapter fusion yet: give its source languages")
                self.add_fusion(lang, sources)
            elif sources is not None and [s for s in sources if s != lang] != self.fusion_sources[lang][:-1]:
                raise ValueError(f"the fusion of {lang!r} is over {self.fusion_sources[lang]}, not {list(sources)}")
            adapters = {n: self.adapters[n] for n in self.fusion_sources[lang]}
            fusion = self.fusions[lang]
        return CTCRecognizer(self.encoder, self.heads[lang], adapters, fusion, language=lang,
                             name=name or f"recognizer_{lang}_{mode}")

    # -- trainable groups ----------------------------------------------------------------
    def layers_of(self, group: str, name: str | None = None) -> list[keras.layers.Layer]:
        """The layers of a group: "backbone" (the encoder), "adapters" (of `name`),
        "head" (of language `name`), "fusion" (of target `name`). name None = all of the group."""
        if group == "backbone":
            return [self.encoder]
        table = {"adapters": self.adapters, "head": {k: [v] for k, v in self.heads.items()}, "fusion": self.fusions}
        if group not in table:
            raise ValueError(f"group {group!r}: expected one of {', '.join(GROUPS)}")
        if name is None:
            return [layer for layers in table[group].values() for layer in layers]
        if name not in table[group]:
            raise InputError(f"{group} {name!r}: not in this model (known: {', '.join(table[group])})")
        return list(table[group][name])

    def all_layers(self) -> list[keras.layers.Layer]:
        return [layer for group in GROUPS for layer in self.layers_of(group)]

    def set_trainable(self, group: str, name: str | None = None, trainable: bool = True) -> None:
        """Marks a group's layers (trainable / frozen) for every recogniser sharing them."""
        for layer in self.layers_of(group, name):
            layer.trainable = trainable

    def freeze_all(self) -> None:
        for layer in self.all_layers():
            layer.trainable = False

    def train_only(self, backbone: bool = False, adapters: Iterable[str] = (), heads: Iterable[str] = (),
                   fusions: Iterable[str] = ()) -> None:
        """Freezes everything, then makes the named parts trainable. Compile recognisers after
        this (an optimizer is built for the variables that are trainable at its first step).

        >>> asr.train_only(adapters=["ro"], heads=["ro"])    # two-stage adapter training  # doctest: +SKIP
        """
        self.freeze_all()
        if backbone:
            self.set_trainable("backbone")
        for group, names in (("adapters", adapters), ("head", heads), ("fusion", fusions)):
            for name in names:
                self.set_trainable(group, name)

    def variables_of(self, group: str, name: str | None = None) -> list:
        """The parameters of a group (e.g. for the MAML step), bookkeeping excluded."""
        bookkeeping = {id(v) for layer in self.layers_of("fusion") for v in layer.state_variables}
        return [v for layer in self.layers_of(group, name) for v in layer.weights if id(v) not in bookkeeping]

    def copy_adapters(self, source: str, target: str) -> None:
        """Copies the weights of adapter set `source` into `target` (e.g. MetaAdapter's
        meta-learned initialisation into the target language's adapters)."""
        for src, dst in zip(self.layers_of("adapters", source), self.layers_of("adapters", target)):
            dst.set_weights(src.get_weights())

    # -- saving --------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            **self.encoder_config, "adapter_dim": self.adapter_dim, "vocab_sizes": dict(self.vocab_sizes),
            "adapter_dims": {name: stack[0].bottleneck_dim for name, stack in self.adapters.items()},
            "fusions": {target: {"sources": self.fusion_sources[target],
                                 **{k: layers[0].get_config()[k] for k in ("temperature", "stability_weight",
                                                                           "guide_weight", "dropout")}}
                        for target, layers in self.fusions.items()},
        }

    @classmethod
    def from_config(cls, config: dict) -> "MultilingualASR":
        config = dict(config)
        fusions, adapter_dims = config.pop("fusions", {}), dict(config.pop("adapter_dims", {}))
        model = cls(adapter_dims=adapter_dims, **config)
        for name, dim in adapter_dims.items():
            if name not in model.adapters:
                model.add_adapters(name, dim)
        for target, options in fusions.items():
            options = dict(options)
            model.add_fusion(target, options.pop("sources"), **options)
        return model

    def save(self, directory: str) -> str:
        """Writes `config.json` and `weights.npz` (every layer's weights by layer name)."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump(self.get_config(), f, indent=2)
        arrays = {f"{layer.name}:{i}": value for layer in self.all_layers()
                  for i, value in enumerate(layer.get_weights())}
        np.savez(os.path.join(directory, WEIGHTS_FILE), **arrays)
        return directory

    @classmethod
    def load(cls, directory: str) -> "MultilingualASR":
        """The model `save` wrote into `directory`."""
        paths = [os.path.join(directory, f) for f in (CONFIG_FILE, WEIGHTS_FILE)]
        for path in paths:
            if not os.path.isfile(path):
                raise InputError(f"{path}: missing; expected a folder written by MultilingualASR.save")
        with open(paths[0]) as f:
            model = cls.from_config(json.load(f))
        with np.load(paths[1]) as arrays:
            for layer in model.all_layers():
                count = len(layer.weights)
                missing = [f"{layer.name}:{i}" for i in range(count) if f"{layer.name}:{i}" not in arrays]
                if missing:
                    raise InputError(f"{paths[1]}: no weights for {missing[0]} (the file does not match {paths[0]})")
                layer.set_weights([arrays[f"{layer.name}:{i}"] for i in range(count)])
        return model
