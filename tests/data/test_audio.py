"""The speech front end: decoding, resampling, filterbanks, normalisation, SpecAugment."""

import os

import numpy as np
import pytest
import tensorflow as tf

from kerastl.data import audio

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "speech")


def tone(frequency, rate, seconds, amplitude=0.5):
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(waveform, rate):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.argmax(spectrum) * rate / len(waveform)


def mel_band_centres():
    """Centre frequency of each of the 80 bands: equal steps on the HTK mel scale, 20 Hz .. 8 kHz."""
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f) / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(8000.0), audio.NUM_MEL_BINS + 2)
    return 700.0 * np.expm1(edges[1:-1] / 1127.0)


@pytest.mark.parametrize("samples", [400, 401, 559, 560, 16000])
def test_filterbank_shapes_count_whole_frames(samples):
    frames = 1 + (samples - 400) // 160  # 25 ms frames every 10 ms at 16 kHz
    waveform = np.random.default_rng(0).normal(size=samples).astype(np.float32)
    assert audio.log_mel_filterbanks(waveform).shape == (frames, 80)
    assert int(audio.num_frames(samples)) == frames
    assert audio.log_mel_filterbanks(np.stack([waveform, waveform])).shape == (2, frames, 80)


def test_too_short_waveform_has_no_frames():
    assert audio.log_mel_filterbanks(np.zeros(399, np.float32)).shape == (0, 80)
    assert int(audio.num_frames(399)) == 0


@pytest.mark.parametrize("frequency", [440.0, 1000.0, 3000.0, 6000.0])
def test_sine_energy_lands_in_the_nearest_mel_band(frequency):
    energies = audio.log_mel_filterbanks(tone(frequency, 16000, 0.5)).numpy().mean(axis=0)
    band = int(np.argmin(np.abs(mel_band_centres() - frequency)))
    assert int(np.argmax(energies)) == band
    # Outside the band and its neighbours the energy is far below (log scale: > e^10).
    assert energies[band] - np.median(energies) > 10.0


def test_wav_fixture_decodes_with_its_rate_and_samples():
    path = os.path.join(FIXTURES, "tone_440hz_8khz.wav")
    waveform, rate = audio.read_audio(path)
    assert int(rate) == 8000
    expected = tone(440, 8000, 0.25)
    assert waveform.shape == (2000,)
    np.testing.assert_allclose(waveform.numpy(), expected, atol=1.5 / 32768)
    at_16k = audio.load_audio(path).numpy()
    assert at_16k.shape == (4000,)
    assert abs(dominant_frequency(at_16k, 16000) - 440) <= 4  # FFT bin: 4 Hz


def test_mp3_fixture_decodes_with_its_rate_and_samples():
    path = os.path.join(FIXTURES, "tone_1khz_22050hz.mp3")
    waveform, rate = audio.read_audio(path)
    assert int(rate) == 22050
    # 11,025 encoded samples + encoder delay, padded to whole 576-sample frames.
    assert waveform.shape == (12672,) and 12672 % 576 == 0
    assert abs(dominant_frequency(waveform.numpy(), 22050) - 1000) <= 22050 / 12672
    at_16k = audio.load_audio(tf.constant(path)).numpy()
    assert abs(len(at_16k) - 12672 * 16000 / 22050) <= 1
    assert abs(dominant_frequency(at_16k, 16000) - 1000) <= 16000 / len(at_16k)
    # Half-scale sine: RMS 0.5 / sqrt 2 over the tone (the edges hold encoder delay and padding).
    middle = at_16k[len(at_16k) // 4: 3 * len(at_16k) // 4]
    assert abs(np.sqrt(np.mean(middle ** 2)) - 0.5 / np.sqrt(2)) < 0.02


@pytest.mark.parametrize("rate, frequency", [(22050, 1234.0), (8000, 1234.0), (44100, 5000.0)])
def test_resampling_to_16k_keeps_frequency_and_level(rate, frequency):
    waveform = tone(frequency, rate, 1.0)
    resampled = audio.resample(waveform, rate).numpy()
    assert abs(len(resampled) - 16000) <= 1
    assert abs(dominant_frequency(resampled, 16000) - frequency) <= 1.0  # 1 s: 1 Hz bins
    middle = resampled[2000:-2000]
    assert abs(np.sqrt(np.mean(middle ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resampling_at_16k_is_the_identity():
    waveform = tone(300, 16000, 0.1)
    np.testing.assert_array_equal(audio.resample(waveform, 16000).numpy(), waveform)


def test_normalization_gives_zero_mean_unit_variance_per_bin():
    rng = np.random.default_rng(1)
    features = (rng.normal(size=(50, 80)) * rng.uniform(0.5, 4, size=80) + rng.normal(size=80) * 5).astype("float32")
    normalized = audio.normalize_utterance(features).numpy()
    np.testing.assert_allclose(normalized.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(normalized.std(axis=0), 1, atol=1e-4)


def test_normalization_of_a_padded_batch_ignores_and_zeroes_padding():
    rng = np.random.default_rng(2)
    short, long = rng.normal(size=(30, 80)).astype("float32"), rng.normal(size=(45, 80)).astype("float32")
    batch = np.full((2, 45, 80), 7.0, np.float32)
    batch[0, :30], batch[1] = short, long
    normalized = audio.normalize_utterance(batch, [30, 45]).numpy()
    np.testing.assert_allclose(normalized[0, :30], audio.normalize_utterance(short).numpy(), atol=1e-5)
    np.testing.assert_allclose(normalized[1], audio.normalize_utterance(long).numpy(), atol=1e-5)
    assert np.all(normalized[0, 30:] == 0)


def masked_rows_and_columns(augmented):
    zero = augmented == 0
    return np.flatnonzero(zero.all(axis=1)), np.flatnonzero(zero.all(axis=0))


def test_spec_augment_masks_exactly_the_requested_widths():
    features = np.ones((100, 80), np.float32)
    only_freq = audio.spec_augment(features, 3, num_freq_masks=1, freq_mask_width=7, num_time_masks=0).numpy()
    rows, columns = masked_rows_and_columns(only_freq)
    assert len(rows) == 0 and len(columns) == 7 and columns[-1] - columns[0] == 6
    assert np.count_nonzero(only_freq == 0) == 7 * 100
    only_time = audio.spec_augment(features, 3, num_freq_masks=0, num_time_masks=1, time_mask_width=9).numpy()
    rows, columns = masked_rows_and_columns(only_time)
    assert len(columns) == 0 and len(rows) == 9 and rows[-1] - rows[0] == 8
    assert np.count_nonzero(only_time == 0) == 9 * 80
    # A time mask wider than the utterance masks all of it.
    assert np.all(audio.spec_augment(np.ones((5, 80), np.float32), 0, num_freq_masks=0, num_time_masks=1,
                                     time_mask_width=9).numpy() == 0)


def test_spec_augment_is_deterministic_per_seed_and_works_in_graphs():
    features = np.random.default_rng(3).normal(size=(120, 80)).astype("float32") + 10
    first = audio.spec_augment(features, 11).numpy()
    graph = tf.function(audio.spec_augment)(tf.constant(features), tf.constant([11, 0]))
    np.testing.assert_array_equal(first, graph.numpy())
    masked = [tuple(map(tuple, masked_rows_and_columns(audio.spec_augment(features, s).numpy()))) for s in range(8)]
    assert len(set(masked)) == 8  # different seeds, different masks
    rows, columns = masked_rows_and_columns(first)
    assert 10 <= len(columns) <= 20 and 12 <= len(rows) <= 24  # two masks each, possibly overlapping
    unmasked = np.ones_like(first, bool)
    unmasked[rows], unmasked[:, columns] = False, False
    np.testing.assert_array_equal(first[unmasked], features[unmasked])


def padded_batch(waveforms):
    batch = np.zeros((len(waveforms), max(map(len, waveforms))), np.float32)
    for row, waveform in zip(batch, waveforms):
        row[:len(waveform)] = waveform
    return batch, np.array([len(w) for w in waveforms], np.int32)


def test_front_end_layer_matches_the_pipeline_functions():
    rng = np.random.default_rng(4)
    waveforms = [rng.normal(size=n).astype(np.float32) * 0.1 + tone(500, 16000, n / 16000) for n in (4000, 6000, 2600)]
    batch, lengths = padded_batch(waveforms)
    features, frame_lengths = audio.LogMelFrontEnd()(batch, lengths)
    assert features.shape == (3, 36, 80)
    assert frame_lengths.numpy().tolist() == [23, 36, 14]
    for i, waveform in enumerate(waveforms):
        expected = audio.normalize_utterance(audio.log_mel_filterbanks(waveform)).numpy()
        np.testing.assert_allclose(features[i, :len(expected)].numpy(), expected, atol=1e-4)
        assert np.all(features[i, len(expected):].numpy() == 0)


def test_front_end_without_lengths_uses_every_sample():
    waveform = tone(800, 16000, 0.3)[None]
    features, frame_lengths = audio.LogMelFrontEnd()(waveform)
    assert frame_lengths.numpy().tolist() == [1 + (4800 - 400) // 160]
    np.testing.assert_allclose(features[0].numpy(),
                               audio.normalize_utterance(audio.log_mel_filterbanks(waveform[0])).numpy(), atol=1e-4)
