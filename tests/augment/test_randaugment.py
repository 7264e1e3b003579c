"""Tests for `kerastl.augment.randaugment`: the 14 ops, Cutout, rand_augment, strong_augment."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.augment import randaugment as ra
from kerastl.augment import rand_augment, strong_augment
from kerastl.augment.weak import weak_augment

SHAPES = [(28, 28, 1), (32, 32, 3), (96, 96, 3)]


def seed(s, salt=0):
    return tf.constant([salt, s], tf.int64)


def levels_image(levels):
    """float32 image from 8-bit levels (exact multiples of 1/255)."""
    return tf.constant(np.asarray(levels, np.float64) / 255.0, tf.float32)


def random_levels(shape, low=0, high=256, rng_seed=0):
    return np.random.default_rng(rng_seed).integers(low, high, shape).astype(np.uint8)


def as_levels(image):
    return np.rint(np.asarray(image) * 255.0).astype(int)


def distinct_image(height, width, channels):
    size = height * width * channels
    return (np.arange(size, dtype=np.float32) / size).reshape(height, width, channels)


# ---------------------------------------------------------------------------- the table


def test_op_table_matches_torchssl():
    assert ra.OP_NAMES == ("AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity",
                           "Posterize", "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize",
                           "TranslateX", "TranslateY")
    ranges = {op.name: (op.low, op.high) for op in ra.OPS}
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        assert ranges[name] == (0.05, 0.95)
    assert ranges["Posterize"] == (4.0, 8.0)
    assert ranges["Rotate"] == (-30.0, 30.0)
    assert ranges["ShearX"] == ranges["ShearY"] == ranges["TranslateX"] == ranges["TranslateY"] == (-0.3, 0.3)
    assert ranges["Solarize"] == (0.0, 256.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("index", range(14))
def test_every_op_keeps_shape_dtype_and_range_in_graph_mode(index, shape):
    op = ra.OPS[index]
    apply = tf.function(lambda x, m: ra.apply_op(x, tf.constant(index), m))
    image = tf.constant(random_levels(shape) / 255.0, tf.float32)
    for magnitude in (op.low, (op.low + op.high) / 2, op.high):
        out = apply(image, tf.constant(magnitude, tf.float32))
        assert out.shape == shape and out.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
        # the switch_case branch is the public function
        np.testing.assert_allclose(out.numpy(), op.fn(image, magnitude).numpy(), atol=1e-6)


# ---------------------------------------------------------------------- colour ops, by hand


def test_identity():
    image = tf.constant(distinct_image(32, 32, 3))
    np.testing.assert_array_equal(ra.identity(image, 0.7).numpy(), image.numpy())


def test_posterize_keeps_top_bits():
    #               0.5 -> 127.5 -> 128, 77 = 0b01001101, 1.0 -> 255, 15/255, 16/255
    image = tf.constant([[[0.5], [77 / 255], [1.0], [15 / 255], [16 / 255]]], tf.float32)
    assert as_levels(ra.posterize(image, 4))[0, :, 0].tolist() == [128, 64, 240, 0, 16]
    assert as_levels(ra.posterize(image, 7.9))[0, :, 0].tolist() == [128, 76, 254, 14, 16]  # floor -> 7
    assert as_levels(ra.posterize(image, 8))[0, :, 0].tolist() == [128, 77, 255, 15, 16]
    np.testing.assert_array_equal(ra.posterize(image, 4).numpy() * 255, as_levels(ra.posterize(image, 4)))


def test_solarize_inverts_only_levels_at_or_above_threshold():
    image = levels_image([[[0], [100], [127], [128], [129], [255]]])
    out = as_levels(ra.solarize(image, 128))[0, :, 0]
    assert out.tolist() == [0, 100, 127, 127, 126, 0]
    np.testing.assert_array_equal(ra.solarize(image, 256).numpy(), image.numpy())
    np.testing.assert_allclose(ra.solarize(image, 0).numpy(), 1.0 - image.numpy(), atol=1e-7)


def test_auto_contrast_stretches_each_channel():
    channel0 = np.array([0.2, 0.3, 0.5, 0.6], np.float32)
    image = np.stack([channel0, [0.0, 1.0, 0.5, 0.5], [0.4] * 4], axis=-1).reshape(2, 2, 3)
    out = ra.auto_contrast(tf.constant(image)).numpy().reshape(4, 3)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], [0.0, 1.0, 0.5, 0.5], atol=1e-6)  # already full range
    np.testing.assert_array_equal(out[:, 2], [0.4] * 4)  # constant channel unchanged


def test_equalize_two_valued_image():
    # 32x32, half the pixels at level 50, half at 200: step = 512 // 255 = 2,
    # lut[50] = (1 + 0) // 2 = 0, lut[200] = (1 + 512) // 2 = 256 -> 255.
    levels = np.full((32, 32, 1), 50)
    levels[:, 16:] = 200
    out = as_levels(ra.equalize(levels_image(levels)))
    assert set(np.unique(out[:, :16])) == {0} and set(np.unique(out[:, 16:])) == {255}


def test_equalize_three_valued_image_and_channels_independent():
    # channel 0: level 10 x 512, 20 x 256, 30 x 256 -> step = 768 // 255 = 3,
    # lut[10] = 1 // 3 = 0, lut[20] = (1 + 512) // 3 = 171, lut[30] = (1 + 768) // 3 = 256 -> 255.
    # channel 1: a single level -> unchanged.
    levels = np.zeros((32, 32, 2), int)
    levels[:16, :, 0], levels[16:24, :, 0], levels[24:, :, 0] = 10, 20, 30
    levels[..., 1] = 77
    out = as_levels(ra.equalize(levels_image(levels)))
    assert set(np.unique(out[:16, :, 0])) == {0}
    assert set(np.unique(out[16:24, :, 0])) == {171}
    assert set(np.unique(out[24:, :, 0])) == {255}
    assert set(np.unique(out[..., 1])) == {77}


def test_equalize_small_image_is_unchanged():
    # 8x8 two-valued: step = 32 // 255 = 0, so PIL leaves the image as it is
    levels = np.full((8, 8, 3), 40)
    levels[4:] = 90
    np.testing.assert_array_equal(ra.equalize(levels_image(levels)).numpy(), levels_image(levels).numpy())


def test_brightness():
    image = tf.constant(distinct_image(32, 32, 3))
    np.testing.assert_array_equal(ra.brightness(image, 0.0).numpy(), np.zeros((32, 32, 3)))
    np.testing.assert_allclose(ra.brightness(image, 1.0).numpy(), image.numpy(), atol=1e-7)
    np.testing.assert_allclose(ra.brightness(image, 0.25).numpy(), 0.25 * image.numpy(), atol=1e-6)


def test_contrast_factor_zero_gives_mean_grey():
    grey = np.array([[[0.2], [0.4]], [[0.6], [1.0]]], np.float32)
    np.testing.assert_allclose(ra.contrast(tf.constant(grey), 0.0).numpy(), np.full((2, 2, 1), 0.55), atol=1e-6)
    np.testing.assert_allclose(ra.contrast(tf.constant(grey), 0.5).numpy(), (grey + 0.55) / 2, atol=1e-6)
    # RGB: the mean of the luminance 0.299 R + 0.587 G + 0.114 B, in every channel
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 0], rgb[0, :, 1] = 1.0, 1.0  # luminances 0.886, 0.886, 0.299, 0.299
    np.testing.assert_allclose(ra.contrast(tf.constant(rgb), 0.0).numpy(), np.full((2, 2, 3), 0.5925), atol=1e-6)
    np.testing.assert_allclose(ra.contrast(tf.constant(rgb), 1.0).numpy(), rgb, atol=1e-7)


def test_color():
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.2, 0.4, 0.6]]], np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(ra.color(tf.constant(rgb), 0.0).numpy(), np.repeat(luma[..., None], 3, -1), atol=1e-6)
    np.testing.assert_allclose(ra.color(tf.constant(rgb), 1.0).numpy(), rgb, atol=1e-7)
    half = (rgb + luma[..., None]) / 2
    np.testing.assert_allclose(ra.color(tf.constant(rgb), 0.5).numpy(), half, atol=1e-6)
    grey = tf.constant(distinct_image(28, 28, 1))
    np.testing.assert_array_equal(ra.color(grey, 0.05).numpy(), grey.numpy())


def test_sharpness_factor_zero_is_pil_smooth_inside_and_keeps_border():
    image = np.zeros((5, 5, 1), np.float32)
    image[2, 2] = 1.0
    out = ra.sharpness(tf.constant(image), 0.0).numpy()[..., 0]
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = 1 / 13
    expected[2, 2] = 5 / 13
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # a spike on the border is not smoothed (PIL copies the border of the filtered image)
    edge = np.zeros((5, 5, 1), np.float32)
    edge[0, 2] = 1.0
    out = ra.sharpness(tf.constant(edge), 0.0).numpy()[..., 0]
    assert out[0, 2] == 1.0 and np.isclose(out[1, 2], 1 / 13) and np.isclose(out[1, 1], 1 / 13)
    np.testing.assert_allclose(ra.sharpness(tf.constant(image), 1.0).numpy(), image, atol=1e-7)


# ------------------------------------------------------------------- geometric ops, by hand


def test_translate_x_by_whole_pixels_shifts_and_fills_black():
    image = distinct_image(32, 32, 3) + 0.1  # no pixel of the image is black
    out = ra.translate_x(tf.constant(image), 3 / 32).numpy()  # content moves 3 columns left
    np.testing.assert_array_equal(out[:, :29], image[:, 3:])
    np.testing.assert_array_equal(out[:, 29:], np.zeros((32, 3, 3)))  # PIL's default fill
    out = ra.translate_x(tf.constant(image), -3 / 32).numpy()  # ... and right
    np.testing.assert_array_equal(out[:, 3:], image[:, :29])
    np.testing.assert_array_equal(out[:, :3], np.zeros((32, 3, 3)))
    out = ra.translate_x(tf.constant(image), 3 / 32, fill=0.5).numpy()  # another fill on request
    np.testing.assert_array_equal(out[:, 29:], 0.5)


def test_translate_y_by_whole_pixels():
    image = distinct_image(28, 28, 1)
    out = ra.translate_y(tf.constant(image), 7 / 28).numpy()  # content moves 7 rows up
    np.testing.assert_array_equal(out[:21], image[7:])
    np.testing.assert_array_equal(out[21:], np.zeros((7, 28, 1)))


def test_rotate_zero_is_identity_and_ninety_is_rot90():
    image = distinct_image(32, 32, 3)
    np.testing.assert_array_equal(ra.rotate(tf.constant(image), 0.0).numpy(), image)
    out = ra.rotate(tf.constant(image), 90.0).numpy()
    # PIL convention: positive angles rotate counter-clockwise, like np.rot90
    np.testing.assert_array_equal(out, np.rot90(image, k=1, axes=(0, 1)))
    assert out[0, 0, 0] == image[0, 31, 0] and out[10, 5, 1] == image[5, 21, 1]
    np.testing.assert_array_equal(ra.rotate(tf.constant(image), -90.0).numpy(), np.rot90(image, k=-1, axes=(0, 1)))
    odd = distinct_image(27, 27, 1)
    np.testing.assert_array_equal(ra.rotate(tf.constant(odd), 90.0).numpy(), np.rot90(odd, axes=(0, 1)))


def test_rotate_thirty_fills_corners_black_and_keeps_centre():
    image = np.ones((32, 32, 1), np.float32)
    out = ra.rotate(tf.constant(image), 30.0).numpy()
    assert out[0, 0, 0] == 0.0 and out[-1, -1, 0] == 0.0 and out[16, 16, 0] == 1.0


def test_shear_zero_is_identity_and_shear_x_moves_rows():
    image = distinct_image(32, 32, 3)
    np.testing.assert_array_equal(ra.shear_x(tf.constant(image), 0.0).numpy(), image)
    np.testing.assert_array_equal(ra.shear_y(tf.constant(image), 0.0).numpy(), image)
    out = ra.shear_x(tf.constant(image), 0.25).numpy()
    # pixel centres: output (x, y) reads input x + 0.25 (y + 0.5); row 6 is shifted by
    # 1.625 -> 2 columns (nearest), row 0 by 0.125 -> 0
    np.testing.assert_array_equal(out[0], image[0])
    np.testing.assert_array_equal(out[6, :30], image[6, 2:])
    np.testing.assert_array_equal(out[6, 30:], 0.0)
    out = ra.shear_y(tf.constant(image), 0.25).numpy()
    np.testing.assert_array_equal(out[:30, 6], image[2:, 6])


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_ops_match_pillow(shape):
    """Cross-check against PIL itself (geometry exact; blends within PIL's 8-bit rounding)."""
    from PIL import Image, ImageEnhance, ImageOps  # Pillow comes with matplotlib

    levels = np.clip(random_levels(shape, 0, 160) // 2 + np.arange(shape[1])[None, :, None] * 3, 0, 255)
    levels = levels.astype(np.uint8)
    pil = Image.fromarray(levels[..., 0] if shape[-1] == 1 else levels)
    image = levels_image(levels)

    def check(ours, theirs, tolerance=0.0):
        theirs = np.asarray(theirs, np.float64).reshape(shape)
        error = np.abs(np.asarray(ours) * 255.0 - theirs).max()
        assert error <= tolerance + 1e-3, (error, tolerance)

    check(ra.equalize(image), ImageOps.equalize(pil))
    check(ra.auto_contrast(image), ImageOps.autocontrast(pil), 1.0)
    for bits in (4, 5, 6, 7, 8):
        check(ra.posterize(image, bits), ImageOps.posterize(pil, bits))
    for threshold in (0, 77, 128, 255, 256):
        check(ra.solarize(image, threshold), ImageOps.solarize(pil, threshold))
    for factor in (0.05, 0.5, 0.95):
        # PIL rounds the degenerate image to 8 bits (<= 0.5) and truncates the blend (< 1)
        check(ra.brightness(image, factor), ImageEnhance.Brightness(pil).enhance(factor), 1.0)
        check(ra.color(image, factor), ImageEnhance.Color(pil).enhance(factor), 1.5)
        check(ra.contrast(image, factor), ImageEnhance.Contrast(pil).enhance(factor), 1.5)
        check(ra.sharpness(image, factor), ImageEnhance.Sharpness(pil).enhance(factor), 1.5)
    # geometry: our default fill against PIL's default fill (the reference passes none)
    w, h = pil.size
    for angle in (-30.0, -7.3, 13.0, 30.0):
        check(ra.rotate(image, angle), pil.rotate(angle))
    for v in (-0.3, -0.11, 0.17, 0.3):
        check(ra.shear_x(image, v), pil.transform(pil.size, Image.AFFINE, (1, v, 0, 0, 1, 0)))
        check(ra.shear_y(image, v), pil.transform(pil.size, Image.AFFINE, (1, 0, 0, v, 1, 0)))
        check(ra.translate_x(image, v), pil.transform(pil.size, Image.AFFINE, (1, 0, v * w, 0, 1, 0)))
        check(ra.translate_y(image, v), pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, v * h)))


# ------------------------------------------------------------------------------- cutout


def test_cutout_colour_is_torchssls_and_its_luminance_for_grey_images():
    np.testing.assert_allclose(ra.cutout_fill(3), (125 / 255, 123 / 255, 114 / 255))
    # PIL's RGB -> L: (299 * 125 + 587 * 123 + 114 * 114) / 1000 = 122.572 -> 123
    np.testing.assert_allclose(ra.cutout_fill(1), (123 / 255,))
    from PIL import Image

    assert Image.new("RGB", (1, 1), ra.CUTOUT_RGB).convert("L").getpixel((0, 0)) == ra.CUTOUT_GREY


def test_cutout_square_by_hand():
    colour = np.array([125, 123, 114]) / 255
    image = np.ones((32, 32, 3), np.float32)
    # v = 8, centre (16, 16): top-left (12, 12), PIL's rectangle includes (20, 20)
    out = ra.cutout(tf.constant(image), 0.25, center=(16, 16)).numpy()
    expected = image.copy()
    expected[12:21, 12:21] = colour
    np.testing.assert_allclose(out, expected, atol=1e-7)
    # clipped at the borders: centre (1, 30), v = 8 -> rows 0..8 (top max(0, -3) = 0), cols 26..31
    out = ra.cutout(tf.constant(image), 0.25, center=(1.0, 30.0)).numpy()
    expected = image.copy()
    expected[0:9, 26:32] = colour
    np.testing.assert_allclose(out, expected, atol=1e-7)
    # v = 5.5, centre (10.3, 7.9): top floor(7.55) = 7 .. floor(12.55) = 12, left floor(5.15) = 5 .. 10
    out = ra.cutout(tf.constant(image), 5.5 / 32, center=(10.3, 7.9)).numpy()
    expected = image.copy()
    expected[7:13, 5:11] = colour
    np.testing.assert_allclose(out, expected, atol=1e-7)
    np.testing.assert_array_equal(ra.cutout(tf.constant(image), 0.0, center=(16, 16)).numpy(), image)
    grey = ra.cutout(tf.ones([8, 8, 1]), 0.25, center=(4, 4)).numpy()[..., 0]  # v = 2: rows/cols 3..5
    assert np.allclose(grey[3:6, 3:6], 123 / 255) and (grey == 1.0).sum() == 64 - 9


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_cutout_matches_pillow_drawing_torchssls_rectangle(shape):
    """TorchSSL's CutoutAbs, step by step on PIL: corner int(max(0, c - v / 2)), far corner
    min(side, corner + v), rectangle filled with (125, 123, 114); grey-scale images get the
    RGB result converted to "L" (PIL cannot draw the RGB colour on them)."""
    from PIL import Image, ImageDraw

    height, width = shape[:2]
    levels = random_levels((height, width, 3), 0, 256, rng_seed=4)
    if shape[-1] == 1:
        levels = np.repeat(np.asarray(Image.fromarray(levels).convert("L"))[..., None], 3, axis=-1)
    rng = np.random.default_rng(7)
    for _ in range(20):
        v = rng.uniform(0, 0.5) * width
        center_x, center_y = rng.uniform(1, width), rng.uniform(1, height)
        x0, y0 = int(max(0, center_x - v / 2.0)), int(max(0, center_y - v / 2.0))
        pil = Image.fromarray(levels)
        ImageDraw.Draw(pil).rectangle((x0, y0, min(width, x0 + v), min(height, y0 + v)), ra.CUTOUT_RGB)
        if shape[-1] == 1:
            pil = pil.convert("L")
        theirs = np.asarray(pil, np.float64).reshape(shape)
        ours = ra.cutout(levels_image(levels[..., :shape[-1]]), v / width, center=(center_y, center_x))
        np.testing.assert_allclose(np.asarray(ours) * 255.0, theirs, atol=1e-3)


def test_rand_augment_cutout_square_side_is_at_most_half():
    # with num_ops=0 only the cutout acts: a square (clipped) of TorchSSL's colour, side
    # floor(v) + 1 <= 16 for v < 16, on white
    image = tf.ones([32, 32, 3])
    sides = []
    for s in range(100):
        out = rand_augment(image, seed(s), num_ops=0).numpy()
        filled = np.all(np.abs(out - ra.cutout_fill(3)) < 1e-6, axis=-1)
        assert np.all(filled | np.all(out == 1.0, axis=-1))
        if filled.any():
            rows, cols = np.flatnonzero(filled.any(1)), np.flatnonzero(filled.any(0))
            assert filled[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and filled.sum() == len(rows) * len(cols)
            sides.append(max(len(rows), len(cols)))
    assert max(sides) <= 16 and len(sides) > 80 and max(sides) >= 12
    np.testing.assert_array_equal(rand_augment(image, seed(0), num_ops=0, cutout=0.0).numpy(), image.numpy())


# ------------------------------------------------------------------------- rand_augment


@pytest.fixture(scope="module")
def augment_graph():
    return tf.function(lambda image, s: rand_augment(image, s, return_ops=True))


@pytest.mark.parametrize("shape", SHAPES)
def test_rand_augment_shape_dtype_range(shape, augment_graph):
    image = tf.constant(random_levels(shape) / 255.0, tf.float32)
    for s in range(10):
        out, ops = augment_graph(image, seed(s))
        assert out.shape == shape and out.dtype == tf.float32 and ops.shape == (3,)
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


def test_docstring_examples():
    assert rand_augment(tf.zeros([32, 32, 3]), seed=tf.constant([0, 1], tf.int64)).shape == (32, 32, 3)
    assert strong_augment(tf.zeros([32, 32, 3]), seed=tf.constant([0, 1], tf.int64)).shape == (32, 32, 3)


def test_rand_augment_is_deterministic_per_seed_eager_and_graph(augment_graph):
    image = tf.constant(random_levels((32, 32, 3), 40, 220) / 255.0, tf.float32)
    for s in range(8):
        eager = rand_augment(image, seed(s)).numpy()
        np.testing.assert_array_equal(eager, rand_augment(image, seed(s)).numpy())
        np.testing.assert_allclose(augment_graph(image, seed(s))[0].numpy(), eager, atol=1e-6)
    outs = {rand_augment(image, seed(s)).numpy().tobytes() for s in range(10)}
    assert len(outs) == 10


def test_rand_augment_applies_the_drawn_ops_in_order(augment_graph):
    image = tf.constant(random_levels((32, 32, 3), 40, 220) / 255.0, tf.float32)
    for s in range(5):
        policy_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed(s), 2))
        indices, magnitudes = ra.sample_ops(policy_seed)
        expected = image
        for index, magnitude in zip(indices.numpy(), magnitudes.numpy()):
            op = ra.OPS[index]
            assert op.low <= magnitude <= op.high
            expected = op.fn(expected, magnitude)
        out, ops = augment_graph(image, seed(s))
        np.testing.assert_array_equal(ops.numpy(), indices.numpy())
        # identical outside the cutout square
        untouched = np.any(np.abs(out.numpy() - ra.cutout_fill(3)) > 1e-6, axis=-1)
        np.testing.assert_allclose(out.numpy()[untouched], expected.numpy()[untouched], atol=1e-5)


def test_rand_augment_changes_most_images(augment_graph):
    image = tf.constant(random_levels((32, 32, 3), 50, 200) / 255.0, tf.float32)
    changed = sum(not np.array_equal(augment_graph(image, seed(s))[0].numpy(), image.numpy()) for s in range(50))
    assert changed >= 45


def test_every_op_gets_chosen_uniformly():
    counts = np.zeros(14, int)
    for s in range(300):
        policy_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed(s, salt=3), 2))
        indices, magnitudes = ra.sample_ops(policy_seed)
        counts += np.bincount(indices.numpy(), minlength=14)
        lows = np.array([ra.OPS[i].low for i in indices.numpy()])
        highs = np.array([ra.OPS[i].high for i in indices.numpy()])
        assert np.all((lows <= magnitudes.numpy()) & (magnitudes.numpy() <= highs))
    assert counts.sum() == 900 and counts.min() > 30 and counts.max() < 100
    # the same through rand_augment(return_ops=True), which uses a sub-seed of its seed
    chosen = set()
    for s in range(60):
        chosen.update(rand_augment(tf.zeros([8, 8, 1]), seed(s), return_ops=True)[1].numpy().tolist())
    assert chosen == set(range(14))


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_rand_augment_in_tf_data_map_with_autotune(shape):
    images = random_levels((16,) + shape, rng_seed=1)

    def view(index, image):
        return rand_augment(tf.cast(image, tf.float32) / 255.0, tf.stack([tf.constant(5, tf.int64), index]))

    dataset = (tf.data.Dataset.from_tensor_slices(images).enumerate()
               .map(view, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(8).prefetch(tf.data.AUTOTUNE))
    batches = [batch.numpy() for batch in dataset]
    assert [b.shape for b in batches] == [(8,) + shape, (8,) + shape]
    out = np.concatenate(batches)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    for i in (0, 7, 15):  # the same view as an eager call with the same seed
        eager = rand_augment(tf.constant(images[i] / 255.0, tf.float32), tf.constant([5, i], tf.int64))
        np.testing.assert_allclose(out[i], eager.numpy(), atol=1e-5)
    np.testing.assert_array_equal(out, np.concatenate([b.numpy() for b in dataset]))


# ----------------------------------------------------------------------- strong_augment


def sub_seeds(s):
    return tf.unstack(tf.random.experimental.stateless_split(s, 2))


@pytest.mark.parametrize("flip", [False, True])
def test_strong_augment_is_rand_augment_then_weak_on_sub_seeds(flip):
    # TorchSSL's order: RandAugment, then flip and reflect-padded crop
    image = tf.constant(distinct_image(32, 32, 3))
    for s in range(10):
        weak_seed, rand_seed = sub_seeds(seed(s, salt=4))
        expected = weak_augment(rand_augment(image, rand_seed), weak_seed, flip=flip)
        np.testing.assert_array_equal(strong_augment(image, seed(s, salt=4), flip=flip).numpy(), expected.numpy())


def test_strong_augment_flip_false_never_mirrors():
    image = tf.constant(distinct_image(32, 32, 3))
    mirrored = 0
    for s in range(40):
        weak_seed, rand_seed = sub_seeds(seed(s))
        flipped_view = tf.image.flip_left_right(weak_augment(rand_augment(image, rand_seed), weak_seed, flip=False))
        no_flip = strong_augment(image, seed(s), flip=False).numpy()
        with_flip = strong_augment(image, seed(s), flip=True).numpy()
        assert not np.array_equal(no_flip, flipped_view.numpy())
        mirrored += np.array_equal(with_flip, flipped_view.numpy())
    assert 8 < mirrored < 32  # flip=True mirrors about half of the time, flip=False never


def test_strong_augment_passes_flip_to_weak_augment(monkeypatch):
    calls = []

    def spy(image, s, flip=True):
        calls.append(flip)
        return image

    monkeypatch.setattr(ra, "weak_augment", spy)
    strong_augment(tf.zeros([28, 28, 1]), seed(0), flip=False)
    strong_augment(tf.zeros([28, 28, 1]), seed(0))
    assert calls == [False, True]


def test_strong_augment_in_tf_data_map():
    images = random_levels((8, 28, 28, 1), rng_seed=2)
    dataset = (tf.data.Dataset.from_tensor_slices(images).enumerate()
               .map(lambda i, x: strong_augment(tf.cast(x, tf.float32) / 255.0, tf.stack([tf.constant(0, tf.int64), i]),
                                                flip=False),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .batch(8))
    out = next(iter(dataset)).numpy()
    assert out.shape == (8, 28, 28, 1) and 0.0 <= out.min() and out.max() <= 1.0
