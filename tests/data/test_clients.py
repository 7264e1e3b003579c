"""kerastl.data.clients: federated client splits on real and hand-made data."""

import numpy as np
import pytest

from kerastl.data.clients import (PAMAP2_CHANNELS, dirichlet_partition, load_federated_data, npz_clients,
                                  pamap2_clients, read_pamap2, split_client, watch_clients)
from kerastl.errors import InputError


def test_split_is_40_30_30_per_class_and_disjoint():
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.repeat([0, 1], 50)
    client = split_client("c", x, y, seed=0)
    assert (len(client.y_train), len(client.y_test), len(client.y_val)) == (40, 30, 30)
    for split in (client.y_train, client.y_test, client.y_val):
        assert (split == 0).sum() == (split == 1).sum()
    seen = np.concatenate([client.x_train, client.x_val, client.x_test])[:, 0]
    assert sorted(seen.tolist()) == list(range(100))
    with pytest.raises(InputError, match="at least 3"):
        split_client("tiny", x[:2], y[:2], seed=0)


def test_dirichlet_partition_uses_every_example_once_and_skews_labels():
    y = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(y, num_clients=20, alpha=0.1, seed=0)
    assert len(parts) == 20 and min(len(p) for p in parts) >= 10
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    # alpha 0.1: most of a client's data comes from few classes; alpha 100: close to uniform
    top_share = np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])
    uniform = dirichlet_partition(y, num_clients=20, alpha=100.0, seed=0)
    top_uniform = np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in uniform])
    assert top_share > 0.5 and top_uniform < 0.3
    assert [p.tolist() for p in dirichlet_partition(y, 20, 0.1, seed=0)] == [p.tolist() for p in parts]
    with pytest.raises(InputError, match="--alpha"):
        dirichlet_partition(y, 20, 0.0, seed=0)
    with pytest.raises(InputError, match="--clients 200"):
        dirichlet_partition(y, 200, 0.1, seed=0)


def test_watch_clients_are_the_ten_subjects():
    data = watch_clients(window=100, stride=50)
    assert len(data.clients) == 10 and data.num_classes == 7
    assert data.input_shape == (100, 6)
    for client in data.clients:
        # standardised with the client's own training windows
        np.testing.assert_allclose(client.x_train.reshape(-1, 6).mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(client.x_train.reshape(-1, 6).std(0), 1.0, atol=1e-3)
        assert len(client.y_val) > 0 and len(client.y_test) > 0


def test_mnist5k_clients_by_dirichlet():
    data = load_federated_data("mnist5k", num_clients=20, alpha=0.1, seed=0)
    assert len(data.clients) == 20 and data.input_shape == (28, 28, 1)
    total = sum(len(c.y_train) + len(c.y_val) + len(c.y_test) for c in data.clients)
    assert total == 5000
    assert 0.0 <= min(c.x_train.min() for c in data.clients) and max(c.x_train.max() for c in data.clients) <= 1.0


def write_pamap2(folder, subject, segments, nan_rows=()):
    """A Protocol/subjectN.dat file: segments of (activity, rows), 54 columns."""
    rng = np.random.default_rng(subject)
    rows = []
    t = 0.0
    for activity, count in segments:
        for _ in range(count):
            row = rng.normal(size=54)
            row[0], row[1], row[2] = t, activity, np.nan
            rows.append(row)
            t += 0.01
    table = np.array(rows)
    for r in nan_rows:
        table[r, PAMAP2_CHANNELS[0]] = np.nan
    (folder / "Protocol").mkdir(exist_ok=True)
    np.savetxt(folder / "Protocol" / f"subject{subject}.dat", table, fmt="%.6f")
    return table


def test_pamap2_files_become_one_client_per_subject(tmp_path):
    table = write_pamap2(tmp_path, 101, [(1, 300), (0, 50), (4, 300)], nan_rows=(10, 11))
    write_pamap2(tmp_path, 102, [(4, 250), (1, 250)])
    subjects = read_pamap2(str(tmp_path), window=100, stride=50)
    names = [name for name, _, _ in subjects]
    assert names == ["subject101", "subject102"]
    _, x, y = subjects[0]
    assert x.shape == (10, 100, 27) and sorted(set(y.tolist())) == [1, 4]     # activity 0 dropped
    np.testing.assert_allclose(x[0, :, 1], table[:100, PAMAP2_CHANNELS[1]], atol=1e-5)   # %.6f text
    v9, v12 = table[9, PAMAP2_CHANNELS[0]], table[12, PAMAP2_CHANNELS[0]]
    assert x[0, 10, 0] == pytest.approx(v9 + (v12 - v9) / 3, rel=1e-4)   # the gap, linearly interpolated
    assert x[0, 11, 0] == pytest.approx(v9 + 2 * (v12 - v9) / 3, rel=1e-4)
    assert np.isfinite(x).all()
    data = pamap2_clients(str(tmp_path), window=100, stride=50, num_clients=2, alpha=1.0)   # pooled, dealt
    assert len(data.clients) == 2 and data.num_classes == 2 and data.class_names == ["lying", "walking"]
    assert sum(len(c.y_train) + len(c.y_val) + len(c.y_test) for c in data.clients) == 18   # every window once
    raw = np.concatenate([x for _, x, _ in subjects])
    assert any(np.array_equal(data.clients[0].x_train[0], w) for w in raw)             # not standardised


def test_pamap2_bad_files(tmp_path):
    with pytest.raises(InputError, match="no Protocol/subject10N.dat"):
        read_pamap2(str(tmp_path))
    (tmp_path / "Protocol").mkdir()
    np.savetxt(tmp_path / "Protocol" / "subject101.dat", np.zeros((10, 53)))
    with pytest.raises(InputError, match="53 columns, expected 54"):
        read_pamap2(str(tmp_path))
    write_pamap2(tmp_path, 101, [(1, 50)])
    with pytest.raises(InputError, match="subject101.dat: no activity lasts a whole --window 100 samples"):
        read_pamap2(str(tmp_path), window=100)


def test_npz_clients(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 10, 3)).astype(np.float32)
    y = np.arange(60) % 3
    np.savez(tmp_path / "ok.npz", x=x, y=y, client=np.repeat([5, 7], 30))
    data = npz_clients(str(tmp_path / "ok.npz"))
    assert [c.name for c in data.clients] == ["client 5", "client 7"] and data.num_classes == 3
    np.savez(tmp_path / "noclient.npz", x=x, y=y)
    with pytest.raises(InputError, match="noclient.npz: no array named 'client'"):
        npz_clients(str(tmp_path / "noclient.npz"))


def test_paired_partition_of_the_reference_is_feasible_for_alpha_001():
    from kerastl.data.clients import paired_dirichlet_partition

    y = np.repeat(np.arange(10), 500)
    with pytest.raises(InputError, match="--partition pairs"):
        dirichlet_partition(y, num_clients=20, alpha=0.01, seed=0)
    parts = paired_dirichlet_partition(y, num_clients=20, alpha=0.01, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(5000))      # every example, once
    assert min(len(p) for p in parts) >= 0.5 * 250                          # half a fair share at least
    classes = [len(np.unique(y[p])) for p in parts]
    assert np.mean(classes) < 7                                             # skewed: most classes elsewhere
    for first in range(0, 20, 2):                                           # a pair splits one chunk
        pair = np.concatenate([parts[first], parts[first + 1]])
        assert len(pair) == 500
    data = load_federated_data("mnist5k", num_clients=20, alpha=0.01, seed=0, partition="pairs")
    assert len(data.clients) == 20
