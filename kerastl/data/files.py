"""User data from files: `npz:PATH` (arrays) and `csv:PATH` (tables and time series).

Both check what they read and raise `InputError` with one line naming the file and what
was expected, so apps can report bad input without a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from kerastl.data.arrays import ImageData, as_labels
from kerastl.data.splits import stratified_holdout
from kerastl.errors import InputError


def read_npz(path: str, required: tuple[str, ...] = ("x", "y")) -> dict[str, np.ndarray]:
    """Reads every array of an `.npz` file into a dict, checking that `required` keys exist."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found, expected an .npz file with arrays {', '.join(required)}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as archive:
                arrays = {key: archive[key] for key in archive.files}
        else:  # a plain .npy file: np.load returns the array itself
            arrays = None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise InputError(f"{path}: not a readable NumPy .npz archive ({type(err).__name__}: {err})") from None
    if arrays is None:
        raise InputError(f"{path}: a single .npy array, expected an .npz archive with arrays {', '.join(required)}")
    missing = [key for key in required if key not in arrays]
    if missing:
        raise InputError(f"{path}: no array named {', '.join(repr(k) for k in missing)}; expected arrays "
                         f"{', '.join(required)} (found: {', '.join(sorted(arrays)) or 'none'})")
    return arrays


def load_npz_images(path: str, test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """Loads an image classification set from an `.npz` file.

    Arrays: `x` (images `[N, H, W, C]` or `[N, H, W]`, uint8 0..255 or float 0..1) and `y`
    (integer labels 0..C-1) are required. Optional: `x_test` and `y_test` (else a seeded,
    stratified `test_fraction` of `x` is held out), `x_unlabeled` (extra unlabeled images),
    `client` (one integer client id per example of `x`, for federated splits) and
    `class_names` (C strings; otherwise C = max label + 1).

    Example:
    >>> np.savez("digits.npz", x=images, y=labels)        # doctest: +SKIP
    >>> data = load_npz_images("digits.npz")               # doctest: +SKIP
    """
    arrays = read_npz(path)
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise InputError(f"{path}: has only one of x_test / y_test, expected both or neither")
    class_names = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else None
    y = as_labels(arrays["y"], len(class_names) if class_names else None, f"{path}: y")
    num_classes = len(class_names) if class_names else int(y.max()) + 1 if y.size else 0
    if num_classes < 2:
        raise InputError(f"{path}: y holds {num_classes} class(es), expected labels of at least 2 classes")
    x = arrays["x"]
    if len(x) != len(y):
        raise InputError(f"{path}: {len(x)} images in x but {len(y)} labels in y, expected one label per image")
    client = arrays.get("client")
    if "x_test" in arrays:
        x_train, y_train, x_test, y_test = x, y, arrays["x_test"], arrays["y_test"]
    else:
        train, test = stratified_holdout(y, test_fraction, seed)
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
        if client is not None:
            client = np.asarray(client)[train] if len(client) == len(y) else client
    return ImageData(name=f"npz:{path}", x_train=x_train, y_train=y_train, x_test=x_test,
                     y_test=y_test, num_classes=num_classes, x_unlabeled=arrays.get("x_unlabeled"),
                     client=client, class_names=class_names)


@dataclasses.dataclass
class Table:
    """A numeric table read from CSV.

    Attributes:
        features: float32 `[N, F]` matrix of the feature columns.
        feature_names: the F column names.
        time: `datetime64[ns]` vector when a time column was named, else None.
        labels: the label column as given (int64 if integral), else None.
    """

    features: np.ndarray
    feature_names: list[str]
    time: np.ndarray | None = None
    labels: np.ndarray | None = None


def read_csv_table(
    path: str,
    feature_columns: list[str] | None = None,
    time_column: str | None = None,
    label_column: str | None = None,
    missing: str = "error",
) -> Table:
    """Reads a CSV table (a header row, one row per sample or time step).

    Args:
        path: the CSV file.
        feature_columns: columns to use as features; default every numeric column other than
            the time and label columns.
        time_column: a column of timestamps (parsed by pandas); rows are sorted by it.
        label_column: a column of targets or class labels.
        missing: what to do with empty cells in feature columns: `"error"` (default) or
            `"interpolate"` (linear in row order, then the nearest value at the ends).

    Example:
    >>> table = read_csv_table("weather.csv", time_column="date")  # doctest: +SKIP
    >>> table.features.shape                                        # doctest: +SKIP
    (8760, 5)
    """
    import pandas as pd

    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found, expected a CSV file with a header row")
    if missing not in ("error", "interpolate"):
        raise InputError(f"missing={missing!r}, expected 'error' or 'interpolate'")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable CSV table ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if frame.empty:
        raise InputError(f"{path}: no data rows, expected a header row and at least one row")
    for role, column in (("time column", time_column), ("label column", label_column)):
        if column is not None and column not in frame.columns:
            raise InputError(f"{path}: no {role} {column!r}; columns are {', '.join(map(str, frame.columns))}")
    time = None
    if time_column is not None:
        try:
            stamps = pd.to_datetime(frame[time_column])
        except (ValueError, TypeError) as err:
            raise InputError(f"{path}: time column {time_column!r} does not parse as dates ({err})") from None
        frame = frame.assign(**{time_column: stamps}).sort_values(time_column, kind="stable")
        time = frame[time_column].to_numpy(dtype="datetime64[ns]")
    reserved = {time_column, label_column}
    if feature_columns is None:
        feature_columns = [c for c in frame.columns
                           if c not in reserved and pd.api.types.is_numeric_dtype(frame[c])]
        if not feature_columns:
            raise InputError(f"{path}: no numeric feature columns (columns: {', '.join(map(str, frame.columns))})")
    absent = [c for c in feature_columns if c not in frame.columns]
    if absent:
        raise InputError(f"{path}: no column {absent[0]!r}; columns are {', '.join(map(str, frame.columns))}")
    values = frame[feature_columns].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in feature_columns if values[c].isna().sum() > frame[c].isna().sum()]
    if bad:
        raise InputError(f"{path}: column {bad[0]!r} holds non-numeric values, expected numbers")
    if values.isna().any().any():
        if missing == "error":
            column = values.columns[values.isna().any()][0]
            raise InputError(f"{path}: column {column!r} has {int(values[column].isna().sum())} empty cells; "
                             "fill them or ask for missing='interpolate'")
        values = values.interpolate(limit_direction="both")
        if values.isna().any().any():
            column = values.columns[values.isna().any()][0]
            raise InputError(f"{path}: column {column!r} is entirely empty, expected numbers")
    labels = None
    if label_column is not None:
        labels = frame[label_column].to_numpy()
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
    return Table(features=values.to_numpy(np.float32), feature_names=list(map(str, feature_columns)),
                 time=time, labels=labels)
