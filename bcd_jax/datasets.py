"""Real data sets, offline: scikit-learn's bundled sets and MNIST from IDX files you supply.

Nothing here downloads anything.

* :func:`load_digits` (8x8 handwritten digits, 10 classes), :func:`load_diabetes`
  (regression) and :func:`load_breast_cancer` (binary) read the copies that ship *inside*
  scikit-learn, which is an optional dependency (``pip install 'bcd_jax[datasets]'``); it is
  imported only when one of them is called. Each returns a :class:`Dataset` with a seeded
  held-out test split (stratified for classification) and features standardised with the
  TRAINING statistics only.
* :func:`load_idx` reads one file in the IDX format (the format of MNIST and Fashion-MNIST,
  gzipped or not) and :func:`load_mnist` the four standard MNIST files from a folder you
  name.

Example::

    from bcd_jax.datasets import load_digits
    import bcd_jax

    data = load_digits()                      # 1347 train / 450 test, 64 features, 10 classes
    config = bcd_jax.Config(
        network=bcd_jax.Network(depth=2, width=512, bias=True, loss="squared_multiclass"),
        algorithm=bcd_jax.WholeObjective(inner="exact", k_v=1, k_w=1),
        hyper={"weight_decay": 1e-3},
        sweeps=10,
    )
    result = bcd_jax.fit(data.X_train, data.y_train, config, validation=(data.X_test, data.y_test))
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "load_diabetes",
    "load_breast_cancer",
    "load_idx",
    "load_mnist",
    "train_test_split",
    "standardize",
    "MNIST_FILES",
]

EXTRA_HINT = "pip install 'bcd_jax[datasets]'"


class Dataset(NamedTuple):
    """A train/test split ready for :func:`bcd_jax.fit`.

    Attributes:
      name: the data set's name.
      task: ``"multiclass"``, ``"binary"`` or ``"regression"`` (as ``bcd_jax.Loss.task``).
      num_classes: number of classes; ``None`` for regression.
      X_train, X_test: float32 features ``(n, d)``.
      y_train, y_test: int32 class labels ``(n,)`` for classification (accepted as targets by
        the classification losses), float32 targets ``(n,)`` for regression.
      target_mean, target_scale: for regression with ``standardize_target=True``, the training
        targets' mean and standard deviation that were removed (``y = (raw - mean) / scale``;
        a mean squared error in the raw units is ``mse * scale**2``); ``0`` and ``1`` otherwise.
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


def train_test_split(
    n: int, *, test_fraction: float = 0.25, seed: int = 0, labels=None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded index split of ``range(n)`` into shuffled ``(train, test)`` index arrays.

    With ``labels``, the split is stratified: each class contributes
    ``round(test_fraction * class size)`` samples to the test part.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        n_test = max(1, int(round(test_fraction * n)))
        test, train = order[:n_test], order[n_test:]
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},) for n = {n} samples, got {labels.shape}")
        train_parts, test_parts = [], []
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            k = int(round(test_fraction * idx.size))
            test_parts.append(idx[:k])
            train_parts.append(idx[k:])
        train, test = np.concatenate(train_parts), np.concatenate(test_parts)
        train, test = rng.permutation(train), rng.permutation(test)
    if train.size == 0 or test.size == 0:
        raise ValueError(f"test_fraction: {test_fraction} of n = {n} leaves an empty train or test part")
    return train, test


def standardize(X_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centres and scales every column by the TRAINING mean and standard deviation.

    Constant training columns (standard deviation 0, e.g. the always-blank corner pixels of
    the digits) are centred only. Returns float32 copies of ``X_train`` and of each of ``others``.
    """
    X_train = np.asarray(X_train, np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple(((np.asarray(a, np.float64) - mean) / std).astype(np.float32) for a in (X_train, *others))


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


def _from_arrays(name, task, X, y, *, test_fraction, seed, standardize_target=False) -> Dataset:
    X = np.asarray(X, np.float64)
    y = np.asarray(y)
    stratify = y if task != "regression" else None
    train, test = train_test_split(X.shape[0], test_fraction=test_fraction, seed=seed, labels=stratify)
    X_train, X_test = standardize(X[train], X[test])
    if task == "regression":
        y = y.astype(np.float64)
        mean, scale = (float(y[train].mean()), float(y[train].std())) if standardize_target else (0.0, 1.0)
        y_train = ((y[train] - mean) / scale).astype(np.float32)
        y_test = ((y[test] - mean) / scale).astype(np.float32)
        return Dataset(name, task, None, X_train, y_train, X_test, y_test, mean, scale)
    y = y.astype(np.int32)
    num_classes = int(y.max()) + 1
    return Dataset(name, task, num_classes, X_train, y[train], X_test, y[test])


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits: 1797 samples, 64 features, 10 classes (multiclass).

    Use with ``loss="softmax_cross_entropy"`` (or ``"hinge"``); labels are int32 ``0..9``.
    """
    d = _sklearn_datasets().load_digits()
    return _from_arrays("digits", "multiclass", d.data, d.target, test_fraction=test_fraction, seed=seed)


def load_breast_cancer(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled Wisconsin breast cancer set: 569 samples, 30 features, binary.

    Use with ``loss="logistic"``; labels are int32 0/1 (1 = benign, as in scikit-learn).
    """
    d = _sklearn_datasets().load_breast_cancer()
    return _from_arrays("breast_cancer", "binary", d.data, d.target, test_fraction=test_fraction, seed=seed)


def load_diabetes(*, test_fraction: float = 0.25, seed: int = 0, standardize_target: bool = True) -> Dataset:
    """scikit-learn's bundled diabetes regression set: 442 samples, 10 features, one target.

    With ``standardize_target`` (default) the target is centred and scaled by its training mean
    and standard deviation (kept in ``target_mean`` / ``target_scale``), so a test MSE of 1 is
    that of predicting the training mean.
    """
    d = _sklearn_datasets().load_diabetes(scaled=False)
    return _from_arrays(
        "diabetes",
        "regression",
        d.data,
        d.target,
        test_fraction=test_fraction,
        seed=seed,
        standardize_target=standardize_target,
    )


DATASETS = {"digits": load_digits, "diabetes": load_diabetes, "breast_cancer": load_breast_cancer}


def load_dataset(name: str, **kwargs) -> Dataset:
    """One of :data:`DATASETS` by name (``"digits"``, ``"diabetes"``, ``"breast_cancer"``)."""
    if name not in DATASETS:
        raise ValueError(f"name: unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](**kwargs)


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
      directory: the folder that holds the files.
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
