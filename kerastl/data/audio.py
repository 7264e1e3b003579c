"""The speech front end in TensorFlow ops: decoding, resampling, log-mel filterbanks,
per-utterance normalisation and SpecAugment.

Every function works on tensors, so the same code runs inside `tf.data` (training and
evaluation) and inside the exported model (`LogMelFrontEnd`, which serves a raw `waveform`).

- `load_audio(path)`: a WAV (`tf.audio.decode_wav`, 16-bit PCM) or MP3 (tensorflow-io)
  file as mono float32 samples at `SAMPLE_RATE` (16 kHz); other rates are resampled with
  tensorflow-io.
- `log_mel_filterbanks(waveform)`: `NUM_MEL_BINS` (80) log-mel energies per 10 ms frame of
  25 ms (Hann window, 512-point FFT, 20 Hz .. 8 kHz). A waveform of n samples gives
  `num_frames(n) = 1 + (n - 400) // 160` frames (none below 400 samples): only whole frames,
  so a padded batch has exactly the frames of each unpadded utterance, plus padding.
- `normalize_utterance(features, lengths)`: zero mean and unit variance per mel bin over the
  utterance's frames (padding excluded and set to 0).
- `spec_augment(features, seed, ...)`: frequency and time masks (set to 0, the normalised
  mean), positions drawn from a stateless generator: the same seed gives the same masks.

Example:
>>> waveform = load_audio("clips/hello.wav")                      # doctest: +SKIP
>>> features = normalize_utterance(log_mel_filterbanks(waveform))  # doctest: +SKIP
>>> features.shape                                                 # doctest: +SKIP
TensorShape([98, 80])
"""

from __future__ import annotations

import keras
import tensorflow as tf

SAMPLE_RATE = 16000
NUM_MEL_BINS = 80
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_STEP = 160  # 10 ms
FFT_LENGTH = 512
LOWER_EDGE_HZ = 20.0
UPPER_EDGE_HZ = SAMPLE_RATE / 2
LOG_FLOOR = 1e-6  # keeps log() finite on digital silence
NORMALIZE_EPSILON = 1e-6
MIN_SAMPLE_RATE = 8000  # below this the 80 bands up to 8 kHz would be mostly empty
AUDIO_EXTENSIONS = (".wav", ".mp3")


def _tfio_ops():
    # tensorflow-io is imported on first use: its kernels load only where audio is read.
    # The core op is called directly: tfio.audio.resample wraps it in vectorized_map, which
    # falls back to a while_loop (and warns) for one waveform.
    from tensorflow_io.python.ops import core_ops

    return core_ops


def is_mp3(path) -> tf.Tensor:
    """True when the path (a string tensor) ends in .mp3, any case."""
    return tf.strings.regex_full_match(tf.strings.lower(path), r".*\.mp3")


def decode_wav(contents) -> tuple[tf.Tensor, tf.Tensor]:
    """16-bit PCM WAV bytes -> (mono float32 samples in [-1, 1], sample rate int32)."""
    audio, rate = tf.audio.decode_wav(contents)
    return tf.reduce_mean(audio, axis=-1), tf.cast(rate, tf.int32)


def decode_mp3(contents, path) -> tuple[tf.Tensor, tf.Tensor]:
    """MP3 bytes -> (mono float32 samples, sample rate int32). The rate comes from the
    file's frame headers, read by tensorflow-io's audio reader (`path` names the same file)."""
    core_ops = _tfio_ops()
    audio = core_ops.io_audio_decode_mp3(contents, shape=tf.constant([-1, -1], tf.int64))
    _, _, rate = core_ops.io_audio_readable_spec(core_ops.io_audio_readable_init(path))
    return tf.reduce_mean(audio, axis=-1), tf.cast(rate, tf.int32)


def read_audio(path) -> tuple[tf.Tensor, tf.Tensor]:
    """A .wav or .mp3 file -> (mono float32 samples at the file's rate, rate int32)."""
    path = tf.convert_to_tensor(path, tf.string)
    contents = tf.io.read_file(path)
    return tf.cond(is_mp3(path), lambda: decode_mp3(contents, path), lambda: decode_wav(contents))


def resample(waveform, rate_in, rate_out: int = SAMPLE_RATE) -> tf.Tensor:
    """Mono samples at `rate_in` (a tensor or int) -> samples at `rate_out` (tensorflow-io's
    band-limited resampler); returned unchanged when the rates are equal."""
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    rate_in = tf.cast(rate_in, tf.int64)

    def convert():
        return _tfio_ops().io_audio_resample(waveform[:, None], rate_in=rate_in, rate_out=rate_out)[:, 0]

    return tf.cond(tf.equal(rate_in, rate_out), lambda: waveform, convert)


def load_audio(path) -> tf.Tensor:
    """A .wav or .mp3 file -> mono float32 samples `[samples]` at `SAMPLE_RATE`."""
    waveform, rate = read_audio(path)
    return resample(waveform, rate, SAMPLE_RATE)


def num_frames(num_samples) -> tf.Tensor:
    """Filterbank frames (int32) for waveforms of `num_samples`: whole 25 ms frames only."""
    num_samples = tf.cast(num_samples, tf.int32)
    return tf.maximum(0, (num_samples - FRAME_LENGTH) // FRAME_STEP + 1)


def mel_weight_matrix() -> tf.Tensor:
    """The `[FFT_LENGTH // 2 + 1, NUM_MEL_BINS]` triangular mel filters (HTK mel scale)."""
    return tf.signal.linear_to_mel_weight_matrix(NUM_MEL_BINS, FFT_LENGTH // 2 + 1, SAMPLE_RATE,
                                                 LOWER_EDGE_HZ, UPPER_EDGE_HZ)


def log_mel_filterbanks(waveform) -> tf.Tensor:
    """Waveform(s) `[..., samples]` at 16 kHz -> log-mel energies `[..., frames, 80]`."""
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    frames = tf.signal.frame(waveform, FRAME_LENGTH, FRAME_STEP) * tf.signal.hann_window(FRAME_LENGTH)
    # Zero-padded to the FFT size here rather than by rfft, which fails on zero frames.
    rank = tf.rank(frames)
    frames = tf.pad(frames, tf.concat([tf.zeros([rank - 1, 2], tf.int32), [[0, FFT_LENGTH - FRAME_LENGTH]]], 0))
    power = tf.math.square(tf.abs(tf.signal.rfft(frames, [FFT_LENGTH])))
    return tf.math.log(tf.tensordot(power, mel_weight_matrix(), axes=1) + LOG_FLOOR)


def normalize_utterance(features, lengths=None) -> tf.Tensor:
    """Zero mean, unit variance per mel bin over each utterance's frames.

    `features` is `[frames, bins]` (one utterance, every frame valid) or `[batch, frames,
    bins]` with `lengths` `[batch]` valid frames each; padded frames come out as 0.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    if lengths is None:
        mask = tf.ones_like(features[..., :1])
    else:
        mask = tf.sequence_mask(lengths, tf.shape(features)[-2], dtype=features.dtype)[..., None]
    count = tf.maximum(tf.reduce_sum(mask, axis=-2, keepdims=True), 1.0)
    mean = tf.reduce_sum(features * mask, axis=-2, keepdims=True) / count
    centered = (features - mean) * mask
    variance = tf.reduce_sum(tf.square(centered), axis=-2, keepdims=True) / count
    return centered * tf.math.rsqrt(variance + NORMALIZE_EPSILON)


def _as_seed(seed) -> tf.Tensor:
    """A stateless-RNG seed `[2]` int32 from an int or a `[2]` tensor."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    return tf.cast(seed, tf.int32)


def _band_mask(size, width, seed) -> tf.Tensor:
    """Bool `[size]`, True on `width` consecutive indices at a seeded position."""
    width = tf.minimum(tf.cast(width, tf.int32), size)
    start = tf.random.stateless_uniform([], seed, minval=0, maxval=size - width + 1, dtype=tf.int32)
    index = tf.range(size)
    return (index >= start) & (index < start + width)


def spec_augment(features, seed, num_freq_masks: int = 2, freq_mask_width: int = 10,
                 num_time_masks: int = 2, time_mask_width: int = 12) -> tf.Tensor:
    """SpecAugment masking of one utterance's (normalised) features `[frames, bins]`.

    Each frequency mask zeroes exactly `freq_mask_width` adjacent mel bins, each time mask
    exactly `time_mask_width` adjacent frames (all frames when the utterance is shorter);
    masks may overlap. Positions come from a stateless generator seeded by `seed` (an int
    or a `[2]` tensor): the same seed always gives the same masks. Time warping is not done.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    frames, bins = tf.shape(features)[0], tf.shape(features)[1]
    seeds = tf.random.experimental.stateless_split(_as_seed(seed), num_freq_masks + num_time_masks + 1)
    freq_masked = tf.zeros([bins], tf.bool)
    for i in range(num_freq_masks):
        freq_masked |= _band_mask(bins, freq_mask_width, seeds[i])
    time_masked = tf.zeros([frames], tf.bool)
    for i in range(num_time_masks):
        time_masked |= _band_mask(frames, time_mask_width, seeds[num_freq_masks + i])
    masked = time_masked[:, None] | freq_masked[None, :]
    return tf.where(masked, tf.zeros_like(features), features)


@keras.saving.register_keras_serializable("kerastl")
class LogMelFrontEnd(keras.layers.Layer):
    """Padded 16 kHz waveforms `[batch, samples]` (+ optional valid lengths `[batch]`) ->
    (normalised log-mel features `[batch, frames, 80]`, frame lengths int32 `[batch]`).

    It runs `log_mel_filterbanks` and `normalize_utterance`, the functions the training
    pipeline (`kerastl.data.speech.speech_dataset`) uses, so a served model that takes a raw
    `waveform` sees the features it was trained on. Padded frames are 0. No weights.

    Example:
    >>> front_end = LogMelFrontEnd()
    >>> waveform = keras.Input((None,), name="waveform")
    >>> features, frame_lengths = front_end(waveform)
    >>> tuple(features.shape)
    (None, None, 80)
    """

    def __init__(self, normalize: bool = True, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.normalize = bool(normalize)

    def call(self, waveform, lengths=None):
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        if lengths is None:
            lengths = tf.fill(tf.shape(waveform)[:1], tf.shape(waveform)[1])
        frame_lengths = num_frames(lengths)
        features = log_mel_filterbanks(waveform)
        if self.normalize:
            features = normalize_utterance(features, frame_lengths)
        else:
            mask = tf.sequence_mask(frame_lengths, tf.shape(features)[1], dtype=features.dtype)
            features = features * mask[..., None]
        return features, frame_lengths

    def compute_output_spec(self, waveform, lengths=None):
        batch = waveform.shape[0]
        samples = waveform.shape[1]
        frames = None if samples is None else max(0, (samples - FRAME_LENGTH) // FRAME_STEP + 1)
        return (keras.KerasTensor((batch, frames, NUM_MEL_BINS), "float32"),
                keras.KerasTensor((batch,), "int32"))

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}
