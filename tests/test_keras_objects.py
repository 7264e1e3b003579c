"""Every Keras class kerastl registers passes the shared test (`tests/layer_test.py`).

`TABLE` holds, per registered name, the constructor arguments and example inputs of one or
more small instances. Classes are looked up in Keras' registry by their registered name
(`kerastl>Name`), not by module path, so moving a class between modules keeps its test. A
newly registered class without an entry here fails `test_every_registered_class_has_an_entry`.
"""

import importlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerastl
from layer_test import assert_same, run_layer_test, run_object_test

PACKAGE = "kerastl"


def registered(name):
    return keras.saving.get_registered_object(f"{PACKAGE}>{name}")


def registered_names():
    """The registered names of every kerastl class, once every kerastl module is imported."""
    for module in pkgutil.walk_packages(kerastl.__path__, "kerastl."):
        importlib.import_module(module.name)
    return sorted(key.split(">", 1)[1] for key in keras.saving.get_custom_objects() if key.split(">")[0] == PACKAGE)


REGISTERED = registered_names()   # imports every kerastl module, so the table can name their classes


def normal(*shape, seed=0, shift=0.0):
    return (np.random.default_rng(seed).normal(size=shape) + shift).astype("float32")


# -- inputs shared by several entries -----------------------------------------------------
WINDOWS = (0.5 + 0.4 * np.sin(np.arange(16)[None, :, None] / 3.0 + normal(8, 1, 3))).astype("float32")
T, F, K = 6, 3, 3                                     # window length, features, TDC segments
SEGMENTS = normal(K, 4, T, F) + np.arange(K, dtype="float32")[:, None, None, None]
MASK_INPUTS = (np.array([0.9, 0.6, 0.97, 0.3], "float32"), np.array([0, 1, 2, 1], "int32"),
               np.array([0, 1, 2, 3], "int32"))      # max probs, pseudo-labels, indices


def speech_batch(vocabulary, batch=2, frames=24, seed=0):
    rng = np.random.default_rng(seed)
    return {"features": rng.normal(size=(batch, frames, 80)).astype("float32"),
            "feature_lengths": np.array([frames, frames - 6][:batch], "int32"),
            "labels": rng.integers(1, vocabulary, size=(batch, 2)).astype("int32"),
            "label_lengths": np.full(batch, 2, "int32")}


def speech_inputs(batch):
    return {key: batch[key] for key in ("features", "feature_lengths")}


ENCODER = dict(num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16, dropout=0.0)


def recognizer_parts(languages=("ru", "ro"), fusion=True):
    """An encoder, a head and per-language adapters (+ SimAdapter layers fusing them)."""
    encoder = registered("ASREncoder")(**ENCODER)
    adapters = {lang: [registered("Adapter")(2) for _ in range(2)] for lang in languages}
    fusions = [registered("SimAdapter")(guide_weight=0.1, guide_index=len(languages) - 1) for _ in range(2)]
    return dict(encoder=encoder, head=keras.layers.Dense(5), adapters=adapters, fusion=fusions if fusion else None,
                language=languages[-1])


def trainer_recognizers():
    """Two recognisers sharing one encoder (MultilingualASR's layout)."""
    encoder = registered("ASREncoder")(**ENCODER)
    return {"recognizers": {lang: registered("CTCRecognizer")(
        encoder, keras.layers.Dense(5, name=f"head_{lang}"),
        {lang: [registered("Adapter")(2, name=f"adapter_{lang}_{i}") for i in range(2)]}, language=lang)
        for lang in ("aa", "bb")}}


def shares_the_encoder(original, reloaded):
    assert reloaded.recognizers["aa"].encoder is reloaded.recognizers["bb"].encoder


def image_net():
    """8 x 8 grey images -> 3 logits, with batch norm and a `features` layer (ReMixMatch's
    rotation head reads it)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="image_net")


def ssl_batches(views, labeled=2, uratio=2, seed=0):
    """One semi-supervised batch repeated: `((x_lb, y_lb), (index, *views))`."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.normal(size=(n, 8, 8, 1)).astype("float32")
    x_lb, y_lb = images(labeled), np.arange(labeled, dtype="int64") % 3
    unlabeled = labeled * uratio
    batch = (x_lb, y_lb) if not views else (
        (x_lb, y_lb), (np.arange(unlabeled, dtype="int64"), *[images(unlabeled) for _ in views]))
    return tf.data.Dataset.from_tensors(batch).repeat()


def ssl_case(name, trainable_weights=0, **kwargs):
    """An SSL algorithm runs inside a SemiSupervisedModel: that model is called, trained,
    saved and reloaded; the algorithm inside must come back with its config and state."""
    cls = registered(name)

    def host(algorithm):
        return registered("SemiSupervisedModel")(image_net(), algorithm, ema_decay=0.9), lambda model: model.algorithm

    # Arguments that are Keras objects (thresholds) are given as functions: built fresh per object.
    init_kwargs = lambda: {key: value() if callable(value) else value for key, value in kwargs.items()}
    return dict(init_kwargs=init_kwargs, inputs=(normal(3, 8, 8, 1),), host=host, fit_data=ssl_batches(cls.views),
                trainable_weights=trainable_weights)


def cpl(**options):
    return registered("CurriculumThreshold")(**{"num_unlabeled": 4, "num_classes": 3, **options})


def fixed(tau):
    return registered("FixedThreshold")(tau)


# -- probes of the objects that are not layers ---------------------------------------------
def loss_values(loss):
    source = normal(16, 3, seed=1)
    return [loss(source, source * 2.0), loss(source, normal(16, 3, seed=2))]


def learning_rates(schedule):
    return [schedule(step) for step in (0, 50, 100)]


def after_two_steps(optimizer):
    kernel = keras.Variable(normal(3, 2, seed=1), name="kernel")
    bias = keras.Variable(normal(2, seed=2), name="bias")
    for seed in (3, 4):
        optimizer.apply([tf.constant(normal(3, 2, seed=seed)), tf.constant(normal(2, seed=seed))], [kernel, bias])
    return [kernel.numpy(), bias.numpy()]


def sliced_model(callback):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs))
    callback.set_model(model)
    callback.on_train_begin()
    return model.get_layer("dense").kernel.numpy()


MASKS = {"dense": np.random.default_rng(5).random((4, 3)) > 0.5}
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "film", "##s", "tq"]

TABLE = {
    # name: [run_layer_test / run_object_test arguments, ...]
    "AMSL": [dict(init_kwargs=dict(transformations=("noise", "negation", "reversal"), num_slots=6, filters=(2, 4),
                                   head_units=4, shrink_threshold=0.01), inputs=(WINDOWS,),
                  fit_data=(WINDOWS,), compile_kwargs=dict(optimizer=keras.optimizers.Adam(1e-3)))],
    "ASREncoder": [dict(init_kwargs=ENCODER, inputs=(normal(2, 24, 80), np.array([24, 17], "int32")),
                        trainable_weights=40)],
    "AdaRNN": [
        dict(init_kwargs=dict(len_seq=T, num_features=F, num_domains=K, hidden_sizes=[8, 8], bottleneck_width=8,
                              residual_index=1), inputs=(SEGMENTS[0],), fit_data=(SEGMENTS, normal(K, 4))),
        dict(init_kwargs=dict(len_seq=T, num_features=F, num_domains=K, hidden_sizes=[8], matching="final",
                              bottleneck_width=None, residual_index=1), inputs=(SEGMENTS[0],), fit_data=(SEGMENTS, normal(K, 4))),
        dict(init_kwargs=dict(len_seq=T, num_features=F, num_domains=2, hidden_sizes=[6], num_classes=5,
                              bottleneck_width=8, distance="mmd_rbf"),
             inputs=(SEGMENTS[0],), fit_data=(SEGMENTS[:2], np.array([[0, 1, 2, 3], [4, 0, 1, 2]], "int32")))],
    "AdaTransformer": [dict(init_kwargs=dict(len_seq=T, num_features=F, num_domains=K, model_dim=8, num_layers=1,
                                             num_heads=2, ff_dim=8, bottleneck_width=8, residual_index=1),
                            inputs=(SEGMENTS[0],), fit_data=(SEGMENTS, normal(K, 4)))],
    "Adapter": [dict(init_kwargs=dict(bottleneck_dim=2), inputs=(normal(2, 4, 6),), trainable_weights=4)],
    "AdaptiveAveragePooling2D": [dict(init_kwargs=dict(output_size=(3, 2)), inputs=(normal(2, 5, 4, 2),),
                                      trainable_weights=0, train=False)],
    "AdaptiveFusion": [dict(init_kwargs=dict(num_views=4), inputs=([normal(2, 4, 3, 5), normal(2, 4, 3, 5, seed=1)],),
                            trainable_weights=1)],
    "AdversarialDistance": [dict(init_kwargs=dict(hidden_units=4), inputs=(normal(8, 5), normal(8, 5, seed=1, shift=2)),
                                 trainable_weights=6)],
    # MINE draws a new pairing of rows at every call: rows that are all alike make the output
    # independent of the draw, so calls before and after reloading compare.
    "MutualInformationDistance": [dict(init_kwargs=dict(hidden_units=4, seed=3),
                                       inputs=(np.repeat(normal(1, 5), 8, 0), np.repeat(normal(1, 5, seed=1), 8, 0)),
                                       trainable_weights=6, train=False)],
    # A new discriminator at every call unless its weights are given: given here, so calls compare.
    "UntrainedAdversarialDistance": [dict(init_kwargs=dict(hidden_units=4, seed=3),
                                          inputs=(normal(8, 5), normal(8, 5, seed=1, shift=2)),
                                          call_kwargs=dict(weights=(normal(5, 4), normal(4), normal(4, 1), normal(1))),
                                          trainable_weights=0, train=False)],
    "BertInputs": [dict(init_kwargs={}, inputs=(np.array([[2, 7, 3, 0], [2, 5, 0, 0]], "int32"),),
                        trainable_weights=0, train=False)],
    "BertSentenceEncoder": [dict(init_kwargs=dict(vocabulary=VOCABULARY, sequence_length=7),
                                 inputs=(np.array(["A good films", "tq"]),), trainable_weights=0, train=False)],
    "CTCRecognizer": [
        dict(init_kwargs=recognizer_parts, inputs=(speech_inputs(speech_batch(5)),),
             fit_data=tf.data.Dataset.from_tensors(speech_batch(5)).repeat(), atol=1e-5),
        dict(init_kwargs=lambda: recognizer_parts(("ro",), fusion=False), inputs=(speech_inputs(speech_batch(5)),),
             fit_data=tf.data.Dataset.from_tensors(speech_batch(5)).repeat(), atol=1e-5)],
    "ChannelCoverage": [dict(init_kwargs=dict(alpha=0.4), inputs=(normal(3, 5, 4),), trainable_weights=0, train=False)],
    "ConvAutoencoder": [dict(init_kwargs=dict(filters=(2, 4)), inputs=(WINDOWS,), fit_data=(WINDOWS, WINDOWS),
                             compile_kwargs=dict(optimizer=keras.optimizers.Adam(1e-3), loss="mse"))],
    "CosineSchedule": [dict(init_kwargs=dict(learning_rate=0.03, total_steps=100), probe=learning_rates,
                            compiled_as="learning_rate")],
    "CurriculumThreshold": [dict(init_kwargs=dict(num_unlabeled=6, num_classes=3, tau=0.5, warmup=False,
                                                  mapping="concave"), inputs=MASK_INPUTS, trainable_weights=0,
                                 train=False)],
    "DistributionDistance": [dict(init_kwargs=dict(distance="coral"), probe=loss_values, compiled_as="loss")],
    "EncoderBlock": [dict(init_kwargs=dict(model_dim=8, num_heads=2, ff_dim=16), inputs=(normal(2, 5, 8),),
                          trainable_weights=16)],
    "FixMatch": [ssl_case("FixMatch", threshold=lambda: fixed(0.5), lambda_u=0.5, soft_labels=True, temperature=0.7)],
    "FixedThreshold": [dict(init_kwargs=dict(tau=0.8), inputs=MASK_INPUTS, trainable_weights=0, train=False)],
    "ForecastHead": [dict(init_kwargs=dict(bottleneck_width=4), inputs=(normal(4, 6),), trainable_weights=8),
                     dict(init_kwargs=dict(bottleneck_width=None, units=3), inputs=(normal(4, 6),),
                          trainable_weights=2)],
    "FreeMatch": [ssl_case("FreeMatch", num_classes=3, lambda_f=0.01, ema_p=0.9, clip_threshold=True)],
    "LSTMAutoencoder": [dict(init_kwargs=dict(units=4), inputs=(WINDOWS,), fit_data=(WINDOWS, WINDOWS),
                             compile_kwargs=dict(optimizer=keras.optimizers.Adam(1e-3), loss="mse"))],
    "LogMelFrontEnd": [dict(init_kwargs={}, inputs=(normal(2, 4000) * 0.1, np.array([4000, 2600], "int32")),
                            trainable_weights=0, train=False),
                       dict(init_kwargs=dict(normalize=False), inputs=(normal(1, 3000) * 0.1,), trainable_weights=0,
                            train=False)],
    "MeanTeacher": [ssl_case("MeanTeacher", lambda_u=5.0, rampup_steps=4)],
    "MemoryModule": [dict(init_kwargs=dict(num_slots=10, num_memories=4, shrink_threshold=0.02),
                          inputs=(normal(2, 4, 6, 8),), trainable_weights=1),
                     dict(init_kwargs=dict(num_slots=5), inputs=(normal(3, 8),), trainable_weights=1)],
    "MixMatch": [ssl_case("MixMatch", lambda_u=10.0, temperature=0.4, alpha=0.5, seed=3)],
    "MultilingualTrainer": [dict(init_kwargs=trainer_recognizers,
                                 inputs=({lang: speech_inputs(speech_batch(5)) for lang in ("aa", "bb")},),
                                 fit_data=tf.data.Dataset.from_tensors(
                                     {lang: speech_batch(5, seed=i) for i, lang in enumerate(("aa", "bb"))}).repeat(),
                                 after_reload=shares_the_encoder, atol=1e-5)],
    "PiModel": [ssl_case("PiModel", lambda_u=2.0)],
    "PositionalProjection": [dict(init_kwargs=dict(len_seq=5, model_dim=4), inputs=(normal(2, 5, 3),),
                                  trainable_weights=3)],
    "PseudoLabel": [ssl_case("PseudoLabel", threshold=lambda: fixed(0.3), rampup_steps=8),
                    ssl_case("PseudoLabel", threshold=cpl)],
    "ReMixMatch": [ssl_case("ReMixMatch", trainable_weights=2, num_classes=3, p_target=[0.5, 0.25, 0.25], seed=1)],
    "ReMoSSlicing": [dict(init_kwargs=dict(masks=MASKS, mode="reinit", seed=3), probe=sliced_model)],
    "SGDWithL2": [dict(init_kwargs=dict(l2=5e-3, learning_rate=0.1, momentum=0.9, nesterov=True),
                       probe=after_two_steps, compiled_as="optimizer")],
    "SemiSupervisedModel": [dict(init_kwargs=lambda: dict(network=image_net(), algorithm=registered("FixMatch")(
        threshold=cpl(tau=0.0, mapping="linear", warmup=False)), ema_decay=0.9, ema_warmup=True), inputs=(normal(3, 8, 8, 1),),
        fit_data=ssl_batches(("weak", "strong")), trainable_weights=6)],
    "SimAdapter": [dict(init_kwargs=dict(temperature=0.5, guide_weight=0.1, guide_index=1),
                        inputs=(normal(2, 5, 4), normal(2, 5, 2, 4, seed=1), normal(2, 5, 4, seed=2)),
                        trainable_weights=5)],
    "SoftMatch": [ssl_case("SoftMatch", num_classes=3, n_sigma=3.0, ema_p=0.9),
                  ssl_case("SoftMatch", num_classes=3, uniform_alignment=False)],
    "Supervised": [ssl_case("Supervised")],
    "TemporalGate": [dict(init_kwargs=dict(len_seq=5), inputs=(normal(6, 5, 4), normal(6, 5, 4, seed=1)),
                          trainable_weights=4)],
    "TokenCoverage": [dict(init_kwargs=dict(vocabulary_size=6), inputs=(np.array([[3, 1, 3, 0], [5, 0, 0, 0]]),),
                           trainable_weights=0, train=False)],
    "TorchBatchNormalization": [dict(init_kwargs=dict(momentum=0.9, epsilon=1e-3), inputs=(normal(4, 3, 3, 2),),
                                     trainable_weights=2)],
    "UDA": [ssl_case("UDA", threshold=cpl, temperature=0.5), ssl_case("UDA", threshold=lambda: fixed(0.8))],
    "VAT": [ssl_case("VAT", eps=2.0, xi=1e-3, entmin_weight=0.1, seed=4)],
}


def test_every_registered_class_has_an_entry():
    names = REGISTERED
    assert names, "no kerastl class is registered: the package filter is wrong"
    assert sorted(set(names) - set(TABLE)) == [], "registered classes without an entry in TABLE"
    assert sorted(set(TABLE) - set(names)) == [], "TABLE entries that name no registered class"


CASES = [(name, index) for name, cases in TABLE.items() for index in range(len(cases))]


@pytest.mark.parametrize("name, index", CASES, ids=[f"{name}-{index}" for name, index in CASES])
def test_registered_class(name, index, tmp_path):
    cls = registered(name)
    assert cls is not None, f"kerastl>{name} is not registered"
    case = dict(TABLE[name][index])
    if "probe" in case:
        run_object_test(cls, case.pop("init_kwargs"), case.pop("probe"), tmp_path, **case)
    else:
        run_layer_test(cls, case.pop("init_kwargs"), case.pop("inputs"), tmp_path, **case)


def test_the_shared_test_catches_a_layer_that_forgets_its_config(tmp_path):
    @keras.saving.register_keras_serializable("kerastl_tests")
    class Scale(keras.layers.Layer):
        def __init__(self, factor=1.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            config = super().get_config()
            config.pop("factor", None)
            return config

    with pytest.raises(AssertionError):
        run_layer_test(Scale, {"factor": 3.0}, (normal(2, 3),), tmp_path, train=False)
    assert_same(Scale(3.0)(normal(2, 3)), normal(2, 3) * 3.0)
