"""Real data sets, offline, through one loader: :func:`load_dataset`.

Nothing here downloads anything. :func:`load_dataset` takes a bundled name or a file of your
own and returns a :class:`Dataset`: a seeded train/test split (or your separate test file), an
optional validation split carved out of the training part, features standardised with the
TRAINING statistics only, and class labels checked to be ``0..C-1`` (or remapped on request).
The Python API, the command line and grids all go through it, so a file loads the same way
everywhere.

* Bundled sets: ``"digits"`` (8x8 handwritten digits, 10 classes), ``"breast_cancer"``
  (binary) and ``"diabetes"`` (regression) are read from the copies that ship *inside*
  scikit-learn, an optional dependency (``pip install 'bcd_jax[datasets]'``) imported only
  when one of them is loaded. Their default splits are pinned: a published study depends on them.
* Your files: ``.npz`` (arrays ``X`` and ``y``), ``.npy`` (one 2-D array, labels in one column),
  ``.csv`` / ``.tsv`` (a header row, one label column), an IDX file of images with its IDX labels
  file (the MNIST format, gzipped or not), or a folder holding the four standard MNIST files.
* Your arrays: ``load_dataset((X, y))``, for data already in memory.
* :func:`load_idx` reads one IDX file and :func:`load_mnist` the four MNIST files of a folder.

Example::

    import bcd_jax
    from bcd_jax.datasets import describe, load_dataset

    data = load_dataset("measurements.csv", label="species", labels="remap", validation_fraction=0.1)
    print(describe(data))  # measurements (measurements.csv): 101 train / 11 val / 38 test, ...
    config = bcd_jax.Config(
        network=bcd_jax.Network(depth=2, width=512, bias=True, loss="squared_multiclass"),
        algorithm=bcd_jax.WholeObjective(inner="exact", k_v=1, k_w=1),
        hyper={"weight_decay": 1e-3},
        sweeps=10,
    )
    result = bcd_jax.fit(data.X_train, data.y_train, config, validation=(data.X_val, data.y_val))
"""

from __future__ import annotations

import csv
import gzip
import math
import numbers
import os
import struct
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "describe",
    "load_digits",
    "load_diabetes",
    "load_breast_cancer",
    "load_idx",
    "load_mnist",
    "train_test_split",
    "standardize",
    "MNIST_FILES",
    "EXTRA_HINT",
]

EXTRA_HINT = "pip install 'bcd_jax[datasets]' (in a checkout of the repository: pip install -e '.[datasets]')"


class Dataset(NamedTuple):
    """A train/test (and optional validation) split ready for :func:`bcd_jax.fit`.

    Attributes:
      name: the data set's name (the bundled name, or the file's or folder's name).
      task: ``"multiclass"``, ``"binary"`` or ``"regression"`` (as ``bcd_jax.Loss.task``).
      num_classes: number of classes; ``None`` for regression.
      X_train, X_test: features ``(n, d)``, float32 unless ``load_dataset(dtype=...)`` says otherwise.
      y_train, y_test: int32 class labels ``0..num_classes-1`` ``(n,)`` for classification (accepted
        as targets by the classification losses), floating targets ``(n,)`` for regression.
      target_mean, target_scale: for regression with ``standardize_target=True``, the training
        targets' mean and standard deviation that were removed (``y = (raw - mean) / scale``;
        a mean squared error in the raw units is ``mse * scale**2``); ``0`` and ``1`` otherwise.
      X_val, y_val: the validation split carved out of the training part
        (``load_dataset(validation_fraction=...)``); ``None`` when there is none.
      classes: with ``labels="remap"``, the original label of each class index (``classes[k]``
        is the label that became ``k``), to map predictions back; ``None`` when the labels were
        kept as given (they are their own class indices).
      source: what was loaded: the bundled name, the path as given, or ``"arrays"``.
    """

    name: str
    task: str
    num_classes: int | None
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    target_mean: float = 0.0
    target_scale: float = 1.0
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    classes: np.ndarray | None = None
    source: str | None = None

    @property
    def num_features(self) -> int:
        return int(self.X_train.shape[1])

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train`` training and ``n_test`` test samples (the splits are already shuffled)."""
        return self._replace(
            X_train=self.X_train[:n_train],
            y_train=self.y_train[:n_train],
            X_test=self.X_test[:n_test],
            y_test=self.y_test[:n_test],
        )


# --------------------------------------------------------------------------------------
# Splitting and standardisation (NumPy only)
# --------------------------------------------------------------------------------------


def _index_split(n: int, *, fraction: float, seed, labels, argument: str) -> tuple[np.ndarray, np.ndarray]:
    # The one splitting routine, shared by the test and the validation split so both stratify
    # alike; ``argument`` is the name errors give the fraction. The draws are those of the
    # original train_test_split, in the same order: the pinned bundled splits depend on it.
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < fraction < 1.0:
        raise ValueError(f"{argument}: expected a number in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        n_test = max(1, int(round(fraction * n)))
        test, train = order[:n_test], order[n_test:]
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},) for n = {n} samples, got {labels.shape}")
        train_parts, test_parts = [], []
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            k = int(round(fraction * idx.size))
            test_parts.append(idx[:k])
            train_parts.append(idx[k:])
        train, test = np.concatenate(train_parts), np.concatenate(test_parts)
        train, test = rng.permutation(train), rng.permutation(test)
    if train.size == 0 or test.size == 0:
        raise ValueError(f"{argument}: {fraction} of n = {n} leaves an empty part (expected both parts non-empty)")
    return train, test


def train_test_split(
    n: int, *, test_fraction: float = 0.25, seed: int = 0, labels=None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded index split of ``range(n)`` into shuffled ``(train, test)`` index arrays.

    With ``labels``, the split is stratified: each class contributes
    ``round(test_fraction * class size)`` samples to the test part.
    """
    return _index_split(n, fraction=test_fraction, seed=seed, labels=labels, argument="test_fraction")


def _standardize_columns(X_train, *others, dtype) -> tuple[np.ndarray, ...]:
    # In float64 whatever the input, then cast: the statistics of a float32 column would lose
    # digits to the mean, and the bundled splits were pinned with this exact arithmetic.
    X_train = np.asarray(X_train, np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple(((np.asarray(a, np.float64) - mean) / std).astype(dtype) for a in (X_train, *others))


def standardize(X_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centres and scales every column by the TRAINING mean and standard deviation.

    Constant training columns (standard deviation 0, e.g. the always-blank corner pixels of
    the digits) are centred only. Returns float32 copies of ``X_train`` and of each of ``others``.
    """
    return _standardize_columns(X_train, *others, dtype=np.float32)


# --------------------------------------------------------------------------------------
# scikit-learn's bundled data sets
# --------------------------------------------------------------------------------------


def _sklearn_datasets():
    try:
        import sklearn.datasets as skd
    except ImportError as exc:
        raise ImportError(
            f"bcd_jax.datasets: the bundled data sets (digits, diabetes, breast cancer) are read from "
            f"scikit-learn, which is not installed; install the optional extra: {EXTRA_HINT}"
        ) from exc
    return skd


# name -> (task, reader of the raw features and labels). diabetes unscaled: the features are
# standardised here, with the training statistics, like every other set.
_BUNDLED = {
    "digits": ("multiclass", lambda skd: skd.load_digits()),
    "breast_cancer": ("binary", lambda skd: skd.load_breast_cancer()),
    "diabetes": ("regression", lambda skd: skd.load_diabetes(scaled=False)),
}


def load_digits(*, test_fraction: float = 0.25, seed: int = 0, validation_fraction: float = 0.0) -> Dataset:
    """scikit-learn's bundled 8x8 digits: 1797 samples, 64 features, 10 classes (multiclass).

    Use with ``loss="softmax_cross_entropy"`` (or ``"hinge"``); labels are int32 ``0..9``.
    ``load_dataset("digits", ...)`` with these arguments.
    """
    return load_dataset("digits", test_fraction=test_fraction, seed=seed, validation_fraction=validation_fraction)


def load_breast_cancer(*, test_fraction: float = 0.25, seed: int = 0, validation_fraction: float = 0.0) -> Dataset:
    """scikit-learn's bundled Wisconsin breast cancer set: 569 samples, 30 features, binary.

    Use with ``loss="logistic"``; labels are int32 0/1 (1 = benign, as in scikit-learn).
    ``load_dataset("breast_cancer", ...)`` with these arguments.
    """
    return load_dataset(
        "breast_cancer", test_fraction=test_fraction, seed=seed, validation_fraction=validation_fraction
    )


def load_diabetes(
    *, test_fraction: float = 0.25, seed: int = 0, standardize_target: bool = True, validation_fraction: float = 0.0
) -> Dataset:
    """scikit-learn's bundled diabetes regression set: 442 samples, 10 features, one target.

    With ``standardize_target`` (default) the target is centred and scaled by its training mean
    and standard deviation (kept in ``target_mean`` / ``target_scale``), so a test MSE of 1 is
    that of predicting the training mean. ``load_dataset("diabetes", ...)`` with these arguments.
    """
    return load_dataset(
        "diabetes",
        test_fraction=test_fraction,
        seed=seed,
        standardize_target=standardize_target,
        validation_fraction=validation_fraction,
    )


DATASETS = {"digits": load_digits, "diabetes": load_diabetes, "breast_cancer": load_breast_cancer}


# --------------------------------------------------------------------------------------
# IDX files (MNIST)
# --------------------------------------------------------------------------------------

# IDX type code (third magic byte) -> big-endian NumPy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"path: no file at {str(path)!r}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"path: {str(path)!r} looks gzipped but cannot be decompressed ({exc})") from exc
    return raw


def load_idx(path) -> np.ndarray:
    """Reads one IDX file (plain or gzip-compressed) into a NumPy array of its shape and type.

    The format: two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of dimensions D, then D
    big-endian uint32 sizes, then the data, big-endian, in C order. Gzip is detected by its
    magic bytes, not by the file name. MNIST's image files give ``uint8 (n, 28, 28)``, its label
    files ``uint8 (n,)``. The result has the native byte order.

    Raises:
      ValueError: naming the path, for a missing file, a bad magic number, an unknown type
        code, a truncated header or data part, or trailing bytes after the data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    where = f"path: {str(path)!r}"
    if len(raw) < 4:
        raise ValueError(f"{where} is truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic number")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_TYPES:
        raise ValueError(
            f"{where} is not an IDX file: bad magic number 0x{raw[:4].hex()} (expected 0x0000 followed by a type "
            f"byte in {{{', '.join(f'0x{c:02x}' for c in _IDX_TYPES)}}} and the number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{where} is truncated: its header declares {ndim} dimensions ({header} bytes), file has {len(raw)}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise ValueError(
            f"{where} is truncated: shape {shape} of {dtype.name} needs {expected} data bytes, found {got}"
        )
    if got > expected:
        raise ValueError(f"{where} has {got - expected} unexpected bytes after the data of shape {shape}")
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_mnist_file(directory: Path, stem: str) -> Path:
    # The standard names, with or without .gz; some mirrors write "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    candidates = [directory / name for base in (stem, dotted) for name in (base, base + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"directory: no MNIST file {stem!r} (or {stem + '.gz'!r}) in {str(directory)!r}; expected the four "
        f"standard files {sorted(MNIST_FILES.values())}, gzipped or not"
    )


def load_mnist(directory, *, scaling: str | None = "unit", flatten: bool = True) -> Dataset:
    """MNIST (or any data set in its layout, e.g. Fashion-MNIST) from the four standard IDX files.

    Looks in ``directory`` for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ending in ``.gz``.
    Nothing is downloaded. The test split is the files' own.

    Args:
      directory (str | Path): the folder that holds the files.
      scaling: ``"unit"`` divides the pixels by 255; ``"standardize"`` centres and scales each
        pixel by the training set's statistics (:func:`standardize`); ``None`` keeps the raw
        0..255 values (as float32).
      flatten: images as rows ``(n, height * width)`` (what ``bcd_jax.fit`` takes); else ``(n, h, w)``.

    Returns:
      A :class:`Dataset` with task ``"multiclass"``, int32 labels and 10 classes (or the
      largest label + 1 when that is larger).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"directory: no folder at {str(directory)!r}")
    if scaling not in ("unit", "standardize", None):
        raise ValueError(f"scaling: expected 'unit', 'standardize' or None, got {scaling!r}")
    arrays = {}
    for key, stem in MNIST_FILES.items():
        path = _find_mnist_file(directory, stem)
        arr = load_idx(path)
        want = 3 if key.endswith("images") else 1
        if arr.ndim != want:
            raise ValueError(f"path: {str(path)!r} holds a {arr.ndim}-D array of shape {arr.shape}; expected {want}-D")
        arrays[key] = (arr, path)
    for part in ("train", "test"):
        (images, ipath), (labels, lpath) = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"path: {str(ipath)!r} has {images.shape[0]} images but {str(lpath)!r} has {labels.shape[0]} labels; "
                "expected equal"
            )
        if labels.size and (labels.min() < 0 or not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(
                f"path: {str(lpath)!r} holds labels of type {labels.dtype} with minimum {labels.min()}; "
                "expected non-negative integers"
            )
    X_train, X_test = arrays["train_images"][0], arrays["test_images"][0]
    if X_train.shape[1:] != X_test.shape[1:]:
        raise ValueError(
            f"path: the training images are {X_train.shape[1:]} but the test images in "
            f"{str(arrays['test_images'][1])!r} are {X_test.shape[1:]}; expected the same size"
        )
    y_train = arrays["train_labels"][0].astype(np.int32)
    y_test = arrays["test_labels"][0].astype(np.int32)
    shape = X_train.shape[1:]
    X_train = X_train.reshape(len(X_train), -1).astype(np.float32)
    X_test = X_test.reshape(len(X_test), -1).astype(np.float32)
    if scaling == "unit":
        X_train, X_test = X_train / 255.0, X_test / 255.0
    elif scaling == "standardize":
        X_train, X_test = standardize(X_train, X_test)
    if not flatten:
        X_train, X_test = X_train.reshape(-1, *shape), X_test.reshape(-1, *shape)
    num_classes = max(10, int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1)
    return Dataset("mnist", "multiclass", num_classes, X_train, y_train, X_test, y_test)


# --------------------------------------------------------------------------------------
# Your own files: one reader per format, one pipeline after them
# --------------------------------------------------------------------------------------

_TASKS = ("multiclass", "binary", "regression")
# The label column of a CSV/TSV file when ``label`` is not given, in this order.
_LABEL_COLUMNS = ("label", "y", "target", "class")
_FILE_KINDS = {".npz": "npz", ".npy": "npy", ".csv": "csv", ".tsv": "tsv"}
_SHOWN = 8  # distinct values an error message lists before "..."


def _show(values, limit: int = _SHOWN) -> str:
    # The first few of ``values`` as a plain list, saying how many there are when some are left
    # out: an error about 60000 labels must stay one readable line.
    values = list(values)
    items = [v.item() if isinstance(v, np.generic) else v for v in values[:limit]]
    text = repr(items)
    return text if len(values) <= limit else f"{text[:-1]}, ... ({len(values)} in all)]"


class _Part(NamedTuple):
    """One file's (or array pair's) features and raw labels, and how error messages name them."""

    X: np.ndarray
    y: np.ndarray
    what: str  # the features in errors, e.g. "source 'a.csv'"
    where: str  # the labels in errors, always starting with "y", e.g. "y (column 'target' of 'a.csv')"
    columns: tuple[str, ...] | None = None  # a CSV/TSV file's feature names, to line a test file up
    label: str | int | None = None  # the label column the training file used, for its test file


def _check_int(argument: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{argument}: expected an int >= {low}, got {value!r}")
    return int(value)


def _check_flag(argument: str, value) -> bool | None:
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    raise ValueError(f"{argument}: expected True, False or None, got {value!r}")


def _numpy_load(path: Path, argument: str):
    # allow_pickle=False: a data file must not run code when it is opened.
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{argument}: cannot read {str(path)!r} with numpy.load ({exc})") from exc


def _read_npz(path: Path, argument: str, label, keys) -> _Part:
    if label is not None:
        raise ValueError(
            f"label: an .npz file names its arrays with keys=(features, labels), not with label; got label={label!r} "
            f"for {str(path)!r}"
        )
    archive = _numpy_load(path, argument)
    if not hasattr(archive, "files"):
        raise ValueError(
            f"{argument}: {str(path)!r} holds a single array of shape {archive.shape}, not an .npz archive; expected "
            f"arrays {keys[0]!r} and {keys[1]!r}"
        )
    with archive:
        names, arrays = list(archive.files), []
        # The default names also match in the other case (x, Y): both spellings are common.
        for key, other in ((keys[0], "x" if keys[0] == "X" else None), (keys[1], "Y" if keys[1] == "y" else None)):
            name = key if key in names else other if other in names else None
            if name is None:
                also = f" (nor {other!r})" if other else ""
                raise ValueError(
                    f"keys: {str(path)!r} has no array {key!r}{also}; it holds {_show(names)}; expected "
                    "keys=(features, labels) naming two of them"
                )
            try:
                arrays.append((name, archive[name]))
            except ValueError as exc:  # an object array needs pickle
                raise ValueError(f"{argument}: cannot read array {name!r} of {str(path)!r} ({exc})") from exc
    (x_name, X), (y_name, y) = arrays
    return _Part(X, y, f"{argument} {str(path)!r} (array {x_name!r})", f"y (array {y_name!r} of {str(path)!r})")


def _npy_column(label, width: int, path: Path) -> int:
    if label is None:
        return width - 1
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not -width <= label < width:
        raise ValueError(
            f"label: for {str(path)!r} (a 2-D array with {width} columns) expected the label column's index in "
            f"[{-width}, {width - 1}], got {label!r}"
        )
    return int(label) % width


def _read_npy(path: Path, argument: str, label) -> _Part:
    array = _numpy_load(path, argument)
    if hasattr(array, "files"):
        array.close()
        raise ValueError(f"{argument}: {str(path)!r} is an .npz archive, not one array; expected it named *.npz")
    if array.dtype.names is not None or array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"{argument}: {str(path)!r} holds an array of shape {array.shape} and dtype {array.dtype}; expected one "
            "plain 2-D array (n, features + 1) with the labels in column `label` (default the last)"
        )
    column = _npy_column(label, array.shape[1], path)
    X = np.delete(array, column, axis=1)
    return _Part(
        X, array[:, column], f"{argument} {str(path)!r}", f"y (column {column} of {str(path)!r})", label=column
    )


def _label_column(header: list[str], label, shown: str) -> int:
    columns = _show(header, 30)
    if label is None:
        for name in _LABEL_COLUMNS:  # each default name exactly, then in any case if only one column matches
            if name in header:
                return header.index(name)
            matches = [j for j, h in enumerate(header) if h.lower() == name]
            if len(matches) == 1:
                return matches[0]
        raise ValueError(
            f"label: {shown!r} has no label column named 'label', 'y', 'target' or 'class' (the defaults, in that "
            f"order); its columns are {columns} (the first row is the header); expected label= naming the label column"
        )
    if isinstance(label, str):
        if label in header:
            return header.index(label)
        raise ValueError(f"label: {shown!r} has no column {label!r}; its columns are {columns}")
    if not isinstance(label, bool) and isinstance(label, numbers.Integral) and -len(header) <= label < len(header):
        return int(label) % len(header)
    raise ValueError(f"label: for {shown!r} expected a column name (one of {columns}) or index, got {label!r}")


def _read_delimited(path: Path, argument: str, label, delimiter: str) -> _Part:
    shown, kind = str(path), "CSV" if delimiter == "," else "TSV"
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)
            if header is None:
                raise ValueError(f"{argument}: {shown!r} is empty; expected a header row naming the columns")
            header = [cell.strip() for cell in header]
            repeated = sorted({h for h in header if header.count(h) > 1})
            if repeated:
                raise ValueError(f"{argument}: {shown!r} names the columns {repeated} twice; expected distinct names")
            column = _label_column(header, label, shown)
            name = header[column]
            rows, lines, y = [], [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{shown!r} row {len(rows) + 1} (line {reader.line_num})"
                if len(row) != len(header):
                    raise ValueError(
                        f"{argument}: {where} has {len(row)} cells; expected {len(header)}, one per header column"
                    )
                cell = row[column].strip()
                if not cell or _is_non_finite(cell):
                    raise ValueError(f"{argument}: {where}, label column {name!r}: {cell!r}; expected a label")
                y.append(cell)
                rows.append(row[:column] + row[column + 1 :])
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{argument}: cannot read {shown!r} as {kind} ({exc})") from exc
    features = tuple(h for j, h in enumerate(header) if j != column)
    if not rows or not features:
        raise ValueError(
            f"{argument}: {shown!r} has {len(rows)} rows and the columns {header}; expected at least one row and "
            f"one feature column besides the label column {name!r}"
        )
    try:
        X = np.asarray(rows, dtype=np.float64)
    except ValueError:
        X = None
    if X is None or not np.isfinite(X).all():  # find the first bad cell to name it
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                try:
                    value = float(cell)
                except ValueError:
                    value = None
                if value is None or not math.isfinite(value):
                    raise ValueError(
                        f"{argument}: {shown!r} row {i + 1} (line {lines[i]}), column {features[j]!r}: {cell!r} is "
                        f"not a {'number' if value is None else 'finite number'}; expected numbers in every column "
                        f"except the label column {name!r}"
                    )
        raise ValueError(f"{argument}: cannot read the features of {shown!r} as numbers")  # pragma: no cover
    return _Part(X, np.asarray(y), f"{argument} {shown!r}", f"y (column {name!r} of {shown!r})", features, name)


def _is_non_finite(cell: str) -> bool:
    try:
        return not math.isfinite(float(cell))
    except ValueError:
        return False


def _idx_labels_path(images: Path, label, argument: str) -> Path:
    # Without label=, the MNIST naming gives the labels file: train-images-idx3-ubyte ->
    # train-labels-idx1-ubyte (gzipped or not, as the images).
    if label is not None:
        if isinstance(label, str | os.PathLike):
            return Path(label)
        raise ValueError(
            f"{argument}: for the IDX images {str(images)!r} expected the path of the matching IDX labels file, "
            f"got {label!r}"
        )
    guess = images.with_name(images.name.replace("images", "labels").replace("idx3", "idx1"))
    if guess != images and guess.is_file():
        return guess
    tried = f" and {str(guess)!r} does not exist" if guess != images else ""
    raise ValueError(
        f"{argument}: for the IDX images {str(images)!r} expected the path of the matching IDX labels file; "
        f"none given{tried}"
    )


def _read_idx_pair(images: Path, labels, argument: str, label_argument: str) -> _Part:
    # The images first: a file that is not IDX at all should be told so, not asked for labels.
    try:
        X = load_idx(images)
    except ValueError as exc:
        raise ValueError(
            f"{argument}: {exc} (load_dataset reads .npz, .npy, .csv and .tsv files by their suffix, a folder as "
            "the four MNIST files, and any other file as IDX)"
        ) from exc
    labels = _idx_labels_path(images, labels, label_argument)
    try:
        y = load_idx(labels)
    except ValueError as exc:
        raise ValueError(f"{label_argument}: {exc}") from exc
    if X.ndim < 2:
        raise ValueError(
            f"{argument}: {str(images)!r} holds a {X.ndim}-D array of shape {X.shape}; expected images (n, height, "
            "width) or rows (n, d)"
        )
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"{label_argument}: {str(labels)!r} holds labels of shape {y.shape}; expected ({len(X)},), one per "
            f"image of {str(images)!r}"
        )
    return _Part(X, y, f"{argument} {str(images)!r}", f"y (IDX labels {str(labels)!r})")


def _kind(path: Path, argument: str) -> str:
    if path.is_dir():
        return "mnist"
    if not path.is_file():
        raise ValueError(f"{argument}: no file or folder at {str(path)!r}")
    return _FILE_KINDS.get(path.suffix.lower(), "idx")


def _read_file(path: Path, kind: str, argument: str, label, keys, label_argument: str = "label") -> _Part:
    if kind == "npz":
        return _read_npz(path, argument, label, keys)
    if kind == "npy":
        return _read_npy(path, argument, label)
    if kind in ("csv", "tsv"):
        return _read_delimited(path, argument, label, "," if kind == "csv" else "\t")
    return _read_idx_pair(path, label, argument, label_argument)


def _read_test_file(test, kind: str, train: _Part, source: Path, label, keys) -> _Part:
    """The separate test file, read as the training file was (same label column, keys)."""
    if kind == "idx" and isinstance(test, tuple | list):
        if len(test) != 2:
            raise ValueError(f"test: expected an IDX images path or a pair (images, labels) of paths, got {test!r}")
        images, labels = Path(test[0]), test[1]
        if _kind(images, "test") != "idx":
            raise ValueError(f"test: expected an IDX images file like {str(source)!r}, got {str(images)!r}")
        return _read_idx_pair(images, labels, "test", "test")
    if not isinstance(test, str | os.PathLike):
        raise ValueError(f"test: expected the path of a test file like {str(source)!r}, got {test!r}")
    path = Path(test)
    test_kind = _kind(path, "test")
    if test_kind != kind:
        raise ValueError(
            f"test: expected a file of the same kind as {str(source)!r} ({kind}), got {str(path)!r} ({test_kind})"
        )
    if kind == "idx":
        return _read_file(path, kind, "test", None, keys, label_argument="test")
    part = _read_file(path, kind, "test", train.label if kind in ("csv", "tsv", "npy") else label, keys)
    if train.columns is not None and part.columns != train.columns:
        if sorted(part.columns) != sorted(train.columns):
            missing = [c for c in train.columns if c not in part.columns]
            extra = [c for c in part.columns if c not in train.columns]
            raise ValueError(
                f"test: {str(path)!r} has other feature columns than {str(source)!r}: missing {_show(missing)}, "
                f"extra {_show(extra)}; expected the same columns (in any order)"
            )
        order = [part.columns.index(c) for c in train.columns]  # line the columns up by name
        part = part._replace(X=part.X[:, order], columns=train.columns)
    return part


# --------------------------------------------------------------------------------------
# Labels: classes 0..C-1, checked or remapped; regression targets as numbers
# --------------------------------------------------------------------------------------


def _features(X, what: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{what}: expected numeric features, got dtype {X.dtype}")
    if X.ndim < 2 or X.shape[0] == 0 or int(np.prod(X.shape[1:])) == 0:
        raise ValueError(
            f"{what}: expected features (n, d) with n, d >= 1 (images (n, h, w) are flattened), got {X.shape}"
        )
    X = X.reshape(len(X), -1)
    if X.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(X))
        if bad.size:
            i, j = bad[0]
            raise ValueError(f"{what}: row {i}, column {j} is {X[i, j]}; expected finite numbers ({len(bad)} are not)")
    return X


def _label_vector(y, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(f"{where}: expected one label per sample, shape ({n},), got {y.shape}")
    if y.dtype.kind not in "biufUSO":
        raise ValueError(f"{where}: expected numbers or strings, got dtype {y.dtype}")
    return y


def _coerce_labels(y: np.ndarray) -> np.ndarray:
    # Numbers stay numbers; text that is all integers (or all numbers) becomes numbers, so a CSV
    # label column "0, 1, 2" is the classes 0..2; other text stays text (string labels).
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind in "iuf":
        return y
    text = np.char.strip(y.astype(str))
    try:
        return np.array([int(v) for v in text], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        return text.astype(np.float64)
    except ValueError:
        return text


def _check_finite_labels(y: np.ndarray, where: str) -> None:
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise ValueError(f"{where}: row {bad[0]} is {y[bad[0]]}; expected finite labels ({bad.size} are not)")


def _is_integral(values: np.ndarray) -> bool:
    return values.dtype.kind in "iu" or (values.dtype.kind == "f" and bool(np.all(values == np.round(values))))


def _label_problem(values: np.ndarray, task: str, declared: bool) -> str | None:
    """Why sorted distinct ``values`` are not usable as class indices as they are, or None."""
    if values.dtype.kind in "US":
        return "they are strings"
    if not _is_integral(values):
        return "some are not integers"
    if task == "binary":
        return None if set(values.tolist()) <= {0, 1} else "a binary task's labels must be 0 and 1"
    if values[0] < 0:
        return "some are negative"
    if declared:  # num_classes given: classes absent from the data are allowed
        return None
    if values[0] != 0:
        return "they do not start at 0"
    if values[-1] != values.size - 1:
        missing = np.setdiff1d(np.arange(min(int(values[-1]), values.size + _SHOWN)), values)[:_SHOWN]
        count = int(values[-1]) + 1 - values.size
        return (
            f"they have gaps ({count} missing: {_show(missing) if count <= _SHOWN else _show(missing)[:-1] + ', ...]'})"
        )
    return None


def _resolve_labels(y: np.ndarray, *, task, labels: str, num_classes, where: str, default_task):
    """(task, y, classes, num_classes): class indices int32 for classification, float64 targets for regression.

    The task, when neither given nor fixed by a bundled set: classification if the labels are
    integers (integer-valued floats count) or strings, regression if they are numbers with a
    non-integer value; among classification, binary if there are exactly two distinct labels
    (or ``num_classes=2``), multiclass otherwise.
    """
    inferred = task is None and default_task is None
    task = task if task is not None else default_task
    numeric = y.dtype.kind in "iuf"
    if task is None:
        if numeric and not _is_integral(y):
            task = "regression"
        else:
            two = num_classes == 2 if num_classes is not None else np.unique(y).size == 2
            task = "binary" if two else "multiclass"
    if task == "regression":
        if labels == "remap":
            why = " (inferred: y holds non-integer numbers)" if inferred else ""
            raise ValueError(
                f"labels: 'remap' maps class labels to 0..C-1, but the task is 'regression'{why}; expected "
                "labels='check' (regression targets are kept as numbers), or a classification task"
            )
        if not numeric:
            raise ValueError(
                f"{where}: task='regression' needs numeric targets, found strings {_show(np.unique(y))}; expected "
                "numbers, or a classification task with labels='remap'"
            )
        if num_classes is not None:
            raise ValueError(f"num_classes: only classification has classes; task is 'regression', got {num_classes!r}")
        return task, y.astype(np.float64), None, None
    if num_classes is not None:
        num_classes = _check_int("num_classes", num_classes, low=1)
        if task == "binary" and num_classes != 2:
            raise ValueError(f"num_classes: a binary task has 2 classes, got {num_classes}")
    values = np.unique(y)
    how = f"task={task!r}" + (" (inferred: the labels are integers or strings)" if inferred else "")
    if task == "binary" and values.size > 2:
        raise ValueError(
            f"{where}: {how} needs at most two distinct labels, found {values.size}: {_show(values)}; expected "
            "task='multiclass'"
        )
    if labels == "remap":
        codes, classes, needed = np.searchsorted(values, y).astype(np.int32), values, values.size
    else:
        problem = _label_problem(values, task, declared=num_classes is not None)
        if problem is not None:
            mapping = ", ".join(f"{v!r} -> {k}" for k, v in enumerate(values[:4].tolist()))
            fix = (
                f"labels='remap' maps the sorted distinct labels to 0..{values.size - 1} ({mapping}"
                f"{', ...' if values.size > 4 else ''}) and keeps the originals in Dataset.classes"
            )
            if problem.startswith(("they do not start", "they have gaps")):
                fix += ", or num_classes= says how many classes there are when some are absent from the data"
            if inferred and numeric and problem.startswith(("they", "some are negative")):  # integer-valued targets
                fix += ", or task='regression' if y is a continuous target"
            expected = "0 and 1" if task == "binary" else "0..C-1"
            raise ValueError(
                f"{where}: class labels for {how} must be the integers {expected}; found {values.size} distinct "
                f"values {_show(values)}: {problem}. Fix: {fix}"
            )
        codes, classes, needed = y.astype(np.int32), None, int(values[-1]) + 1
    if num_classes is None:
        num_classes = 2 if task == "binary" else needed
    elif num_classes < needed:
        raise ValueError(
            f"num_classes: the labels need at least {needed} classes (largest class index {needed - 1}), got "
            f"{num_classes}"
        )
    return task, codes, classes, num_classes


# --------------------------------------------------------------------------------------
# The one loader
# --------------------------------------------------------------------------------------


def load_dataset(
    source,
    *,
    test=None,
    test_fraction: float = 0.25,
    validation_fraction: float = 0.0,
    seed: int = 0,
    standardize: bool | None = None,
    standardize_target: bool | None = None,
    task: str | None = None,
    label=None,
    labels: str = "check",
    num_classes: int | None = None,
    keys: tuple[str, str] = ("X", "y"),
    dtype="float32",
) -> Dataset:
    """A bundled data set or your own data, split, checked and standardised, as a :class:`Dataset`.

    The one entry point for data: Python, the command line and grids call it, so a file loads
    the same way everywhere.

    Args:
      source (str | Path | tuple): a bundled name (``"digits"``, ``"breast_cancer"``, ``"diabetes"``;
        needs scikit-learn; a bundled name wins over a file of that name, write ``"./digits"`` for
        the file), a pair ``(X, y)`` of arrays, or a path:

        * ``.npz``: arrays ``X`` (features ``(n, d)``; images ``(n, h, w)`` are flattened) and
          ``y`` (``x`` and ``Y`` also match); other names with ``keys``.
        * ``.npy``: one 2-D array; the labels are column ``label`` (an index, default the last).
        * ``.csv`` / ``.tsv``: a header row; the label column is ``label`` (a name or index),
          by default the column named ``label``, else ``y``, ``target``, ``class`` (exactly, then
          in any case). Every other column is a feature and must hold finite numbers.
        * a folder: the four standard MNIST files (``load_mnist``); the test split is theirs.
          Multiclass with 10 classes (or the largest label + 1) unless said otherwise.
        * any other file: IDX images (the MNIST format, gzipped or not), with ``label`` the path
          of its IDX labels file (found from the MNIST naming when not given:
          ``train-images-idx3-ubyte`` -> ``train-labels-idx1-ubyte``).
      test (str | Path | tuple): a separate test file of the same kind (for IDX also a pair ``(images, labels)``;
        with array input a pair ``(X_test, y_test)``), read with the same label column or keys.
        Then nothing is split off for testing and the rows keep their order. Not allowed for a
        bundled set or an MNIST folder, which have their test splits.
      test_fraction: without ``test``, the share held out for testing, in (0, 1): a seeded split
        (``numpy.random.default_rng(seed)``), stratified for classification (:func:`train_test_split`).
      validation_fraction: in [0, 1); above 0, that share of the TRAINING part becomes a
        validation split (``X_val``, ``y_val``), stratified for classification and drawn with
        ``numpy.random.default_rng([seed, 1])``: reproducible from ``seed``, a stream of its own,
        and the test split is the same with or without it.
      seed: the split seed, an int >= 0.
      standardize: centre and scale each feature by the TRAINING part's mean and standard
        deviation; the validation and test parts use the same statistics (a constant training
        column is centred only). ``None`` (default) means on: every source here is real data
        on its own scale. ``False`` keeps the values as given (MNIST's pixels stay 0..255).
      standardize_target: regression only: centre and scale the targets by the training part's
        mean and standard deviation (``target_mean`` / ``target_scale``; a constant target is
        centred only). ``None`` means on for the bundled diabetes set (as it always was) and
        off for your data, whose targets are left as given.
      task: ``"multiclass"``, ``"binary"``, ``"regression"``, or ``None``: the bundled set's own
        task, else inferred: classification if the labels are integers (integer-valued floats
        count) or strings, regression if they are numbers with a non-integer value; binary if
        a classification has exactly two distinct labels (or ``num_classes=2``). An
        integer-valued regression target is inferred as classes: say ``task="regression"``.
        The loss you pick must agree (``bcd_jax.fit`` checks that).
      label (str | int | Path): which column (or file) holds the labels; see ``source``.
      labels: classification labels must be the integers ``0..C-1`` (binary: 0 and 1).
        ``"check"`` (default) raises a ValueError naming ``y``, the distinct values found and the
        fix for strings, non-integers, negative labels, labels that do not start at 0 or have
        gaps (gaps and a missing 0 are fine when ``num_classes`` is given). ``"remap"`` maps the
        sorted distinct labels (of the training and test parts together) to ``0..C-1`` and keeps
        the original of each class index in ``Dataset.classes``. Not for regression.
      num_classes: the number of classes, when the data may not show them all; at least the
        largest class index + 1. Default: from the labels (binary: 2).
      keys: the names of the features and labels arrays in an ``.npz`` file.
      dtype (numpy dtype): the floating type of the features and regression targets (default float32,
        whatever the input; float64 needs ``jax_enable_x64`` to stay float64 in JAX).

    Returns:
      A :class:`Dataset`: the training part shuffled (for a seeded split), int32 labels for
      classification, ``X_val``/``y_val`` when asked for, ``classes`` after a remap, ``source``.

    Raises:
      ValueError: naming the argument (or ``y`` for the labels, with the file and column), what
        was received and what was expected. ImportError: a bundled set without scikit-learn.
    """
    seed = _check_int("seed", seed, low=0)
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, numbers.Real):
        raise ValueError(f"validation_fraction: expected a number in [0, 1), got {validation_fraction!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction: expected a number in [0, 1), got {validation_fraction!r}")
    standardize = _check_flag("standardize", standardize)
    standardize_target = _check_flag("standardize_target", standardize_target)
    if task is not None and (not isinstance(task, str) or task not in _TASKS):
        raise ValueError(f"task: expected one of {list(_TASKS)} or None (infer it), got {task!r}")
    if not isinstance(labels, str) or labels not in ("check", "remap"):
        raise ValueError(f"labels: expected 'check' or 'remap', got {labels!r}")
    if num_classes is not None:
        num_classes = _check_int("num_classes", num_classes, low=1)
    if not isinstance(keys, tuple | list) or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"keys: expected a pair of array names (features, labels), got {keys!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype: expected a floating dtype such as 'float32', got {dtype!r}") from exc
    if dtype.kind != "f":
        raise ValueError(f"dtype: expected a floating dtype such as 'float32' or 'float64', got {dtype}")

    default_task, test_part = None, None
    is_npz = isinstance(source, str | os.PathLike) and Path(source).suffix.lower() == ".npz"
    if tuple(keys) != ("X", "y") and not is_npz:
        what = str(source) if isinstance(source, str | os.PathLike) else f"a {type(source).__name__}"
        raise ValueError(f"keys: only an .npz file has named arrays; source is {what!r}, got keys={keys!r}")
    if isinstance(source, str) and source in _BUNDLED:
        for argument, value in (("test", test), ("label", label)):
            if value is not None:
                raise ValueError(
                    f"{argument}: the bundled set {source!r} has its own labels and test split (drawn with "
                    f"test_fraction and seed); got {argument}={value!r}"
                )
        default_task, read = _BUNDLED[source]
        raw = read(_sklearn_datasets())
        name, shown = source, source
        train = _Part(raw.data, raw.target, f"source {source!r}", f"y (bundled {source!r})")
        if standardize_target is None:
            standardize_target = source == "diabetes" and (task or default_task) == "regression"
    elif isinstance(source, tuple | list):
        if len(source) != 2:
            raise ValueError(
                f"source: expected a pair (X, y) of arrays, got a {type(source).__name__} of {len(source)}"
            )
        if label is not None:
            raise ValueError(f"label: arrays (X, y) have their labels in y; got label={label!r}")
        name, shown = "arrays", "arrays"
        train = _Part(source[0], source[1], "source (X)", "y")
        if test is not None:
            if not isinstance(test, tuple | list) or len(test) != 2:
                raise ValueError(
                    f"test: with arrays (X, y) expected a pair (X_test, y_test), got {type(test).__name__}"
                )
            test_part = _Part(test[0], test[1], "test (X)", "y (test)")
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if isinstance(source, str) and not path.exists():
            raise ValueError(
                f"source: unknown data set {source!r}: not a bundled name (one of {sorted(_BUNDLED)}) and no file or "
                "folder at that path (expected an .npz, .npy, .csv, .tsv or IDX file, or a folder of MNIST files)"
            )
        kind = _kind(path, "source")
        shown = str(source)
        name = path.name.removesuffix(".gz")
        name = Path(name).stem if Path(name).suffix.lower() in _FILE_KINDS else name
        if kind == "mnist":
            for argument, value in (("test", test), ("label", label)):
                if value is not None:
                    raise ValueError(
                        f"{argument}: the MNIST folder {shown!r} holds its own labels and test split (the four "
                        f"standard files); got {argument}={value!r}"
                    )
            try:
                mnist = load_mnist(path, scaling=None)
            except ValueError as exc:
                raise ValueError(f"source: {exc}") from exc
            train = _Part(mnist.X_train, mnist.y_train, f"source {shown!r}", f"y (training labels in {shown!r})")
            test_part = _Part(mnist.X_test, mnist.y_test, f"source {shown!r}", f"y (test labels in {shown!r})")
            default_task = "multiclass"
            if task in (None, "multiclass") and labels == "check" and num_classes is None:
                num_classes = max(10, int(max(mnist.y_train.max(initial=0), mnist.y_test.max(initial=0))) + 1)
        else:
            train = _read_file(path, kind, "source", label, keys)
            if test is not None:
                test_part = _read_test_file(test, kind, train, path, label, keys)
    else:
        raise ValueError(
            f"source: expected a bundled name {sorted(_BUNDLED)}, a path or a pair (X, y) of arrays, got "
            f"{type(source).__name__}"
        )
    return _assemble(
        name,
        shown,
        train,
        test_part,
        task=task,
        default_task=default_task,
        labels=labels,
        num_classes=num_classes,
        test_fraction=test_fraction,
        validation_fraction=float(validation_fraction),
        seed=seed,
        standardize=True if standardize is None else standardize,
        standardize_target=bool(standardize_target),
        dtype=dtype,
    )


def _assemble(
    name: str,
    source: str,
    train: _Part,
    test: _Part | None,
    *,
    task,
    default_task,
    labels,
    num_classes,
    test_fraction,
    validation_fraction,
    seed,
    standardize,
    standardize_target,
    dtype,
) -> Dataset:
    """Every source's one pipeline: labels, test split, validation split, standardisation."""
    X = _features(train.X, train.what)
    y = _coerce_labels(_label_vector(train.y, len(X), train.where))
    _check_finite_labels(y, train.where)
    n = len(X)
    if test is not None:
        X_test = _features(test.X, test.what)
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(f"{test.what}: {X_test.shape[1]} features; expected {X.shape[1]} as in the training data")
        y_test = _coerce_labels(_label_vector(test.y, len(X_test), test.where))
        _check_finite_labels(y_test, test.where)
        if (y.dtype.kind in "US") != (y_test.dtype.kind in "US"):  # numbers in one part, text in the other
            y, y_test = y.astype(str), y_test.astype(str)
        y = np.concatenate([y, y_test])  # one set of classes for both parts
    where = train.where if test is None else f"{train.where} and {test.where}"
    task, y, classes, num_classes = _resolve_labels(
        y, task=task, labels=labels, num_classes=num_classes, where=where, default_task=default_task
    )
    classification = task != "regression"
    if standardize_target and classification:
        raise ValueError(f"standardize_target: only regression targets can be standardised; the task is {task!r}")
    if test is None:
        train_idx, test_idx = train_test_split(
            n, test_fraction=test_fraction, seed=seed, labels=y if classification else None
        )
        X_train, y_train, X_test, y_test = X[train_idx], y[train_idx], X[test_idx], y[test_idx]
    else:
        X_train, y_train, y_test = X, y[:n], y[n:]
    X_val = y_val = None
    if validation_fraction > 0:
        keep, val = _index_split(
            len(X_train),
            fraction=validation_fraction,
            seed=[seed, 1],
            labels=y_train if classification else None,
            argument="validation_fraction",
        )
        X_val, y_val, X_train, y_train = X_train[val], y_train[val], X_train[keep], y_train[keep]
    parts = [X_train, X_test] if X_val is None else [X_train, X_val, X_test]
    # Both branches copy: the Dataset never shares memory with the caller's arrays.
    parts = _standardize_columns(*parts, dtype=dtype) if standardize else [p.astype(dtype) for p in parts]
    X_train, X_test = parts[0], parts[-1]
    X_val = parts[1] if X_val is not None else None
    mean, scale = 0.0, 1.0
    if not classification:
        if standardize_target:
            mean, scale = float(y_train.mean()), float(y_train.std())
            scale = scale if scale > 0 else 1.0
        y_train, y_test = (((t - mean) / scale).astype(dtype) for t in (y_train, y_test))
        y_val = None if y_val is None else ((y_val - mean) / scale).astype(dtype)
    return Dataset(
        name, task, num_classes, X_train, y_train, X_test, y_test, mean, scale, X_val, y_val, classes, source
    )


def describe(dataset: Dataset) -> str:
    """One line for logs and the command line: name, split sizes, features, task and classes.

    E.g. ``digits: 1347 train / 0 val / 450 test, 64 features, multiclass, 10 classes``.
    """
    n_val = 0 if dataset.X_val is None else len(dataset.X_val)
    head = dataset.name if dataset.source in (None, dataset.name) else f"{dataset.name} ({dataset.source})"
    parts = [
        f"{head}: {len(dataset.X_train)} train / {n_val} val / {len(dataset.X_test)} test",
        f"{dataset.num_features} features",
        dataset.task,
    ]
    if dataset.task == "regression":
        if (dataset.target_mean, dataset.target_scale) != (0.0, 1.0):
            parts.append(f"target standardised (mean {dataset.target_mean:.4g}, scale {dataset.target_scale:.4g})")
    else:
        classes = f"{dataset.num_classes} classes"
        if dataset.classes is not None:
            classes += f" (remapped from {_show(dataset.classes, 5)})"
        parts.append(classes)
    return " ".join(", ".join(parts).splitlines())
