"""bcd_jax.datasets: the bundled scikit-learn sets, the IDX/MNIST reader, and one small real fit.

The scikit-learn tests are skipped when the optional extra is not installed; the IDX tests write
their own tiny files (plain and gzipped), so nothing is downloaded.
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import struct

import jax
import numpy as np
import pytest

import bcd_jax
from bcd_jax import datasets
from bcd_jax.datasets import load_idx, load_mnist

# -- IDX files written by the test -------------------------------------------------------

_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic (0, 0, type, ndim), big-endian uint32 dims, big-endian data."""
    array = np.asarray(array)
    header = struct.pack(">HBB", 0, _CODES[array.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, *, compress=False):
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist(directory, *, n_train=6, n_test=4, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if compress else "")), array, compress=compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip_images_and_labels(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    got_images = load_idx(write_idx(tmp_path / f"images{suffix}", images, compress=compress))
    got_labels = load_idx(write_idx(tmp_path / f"labels{suffix}", labels, compress=compress))
    assert got_images.shape == (7, 28, 28) and got_images.dtype == np.uint8
    assert got_labels.shape == (7,) and got_labels.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("dtype", list(_CODES), ids=lambda d: d.name)
def test_idx_every_type_code_is_big_endian(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    got = load_idx(write_idx(tmp_path / "a.idx", array))
    assert got.dtype == dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_idx_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    path = tmp_path / "no-gz-suffix"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(load_idx(path), array)


def test_idx_bad_magic_number(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match="bad magic number 0x12340801") as info:
        load_idx(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x01")  # unknown type code
    with pytest.raises(ValueError, match="bad magic number"):
        load_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_idx_truncated_data(tmp_path, compress):
    data = idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5]
    path = tmp_path / "short"
    path.write_bytes(gzip.compress(data) if compress else data)
    message = r"truncated: shape \(3, 4, 4\) of uint8 needs 48 data bytes, found 43"
    with pytest.raises(ValueError, match=message) as info:
        load_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_header_and_trailing_bytes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        load_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 3))  # declares 3 dims, gives 1
    with pytest.raises(ValueError, match="truncated: its header declares 3 dimensions"):
        load_idx(path)
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="1 unexpected bytes"):
        load_idx(path)


def test_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-12])
    with pytest.raises(ValueError, match="cannot be decompressed") as info:
        load_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "train-images-idx3-ubyte"
    with pytest.raises(ValueError, match="no file at") as info:
        load_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_load_mnist_from_the_four_standard_files(tmp_path, compress):
    arrays = write_mnist(tmp_path, compress=compress)
    data = load_mnist(tmp_path)
    assert data.task == "multiclass" and data.num_classes == 10
    assert data.X_train.shape == (6, 20) and data.X_test.shape == (4, 20)
    assert data.X_train.dtype == np.float32 and data.y_train.dtype == np.int32
    np.testing.assert_allclose(data.X_train, arrays["train-images-idx3-ubyte"].reshape(6, 20) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert data.X_train.min() >= 0 and data.X_train.max() <= 1
    raw = load_mnist(tmp_path, scaling=None, flatten=False)
    assert raw.X_train.shape == (6, 5, 4)
    np.testing.assert_array_equal(raw.X_test, arrays["t10k-images-idx3-ubyte"].astype(np.float32))
    std = load_mnist(tmp_path, scaling="standardize")
    np.testing.assert_allclose(std.X_train.mean(axis=0), 0, atol=1e-5)


def test_load_mnist_missing_file_and_mismatched_counts(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="no MNIST file 't10k-labels-idx1-ubyte'") as info:
        load_mnist(tmp_path)
    assert str(tmp_path) in str(info.value)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))  # 4 images, 3 labels
    with pytest.raises(ValueError, match="has 4 images but .* has 3 labels"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="no folder at"):
        load_mnist(tmp_path / "absent")


def test_load_mnist_rejects_a_labels_file_in_place_of_images(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(6, np.uint8))
    with pytest.raises(ValueError, match="1-D array .* expected 3-D"):
        load_mnist(tmp_path)


# -- splitting and standardisation (NumPy only) -------------------------------------------


def test_split_is_seeded_disjoint_and_stratified():
    labels = np.repeat(np.arange(4), [40, 20, 20, 20])
    train, test = datasets.train_test_split(100, test_fraction=0.25, seed=3, labels=labels)
    again = datasets.train_test_split(100, test_fraction=0.25, seed=3, labels=labels)
    other = datasets.train_test_split(100, test_fraction=0.25, seed=4, labels=labels)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    assert not np.array_equal(np.sort(test), np.sort(other[1]))
    assert set(train).isdisjoint(test) and len(train) + len(test) == 100
    np.testing.assert_array_equal(np.bincount(labels[test]), [10, 5, 5, 5])


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    X_train = rng.normal(3.0, 2.0, (50, 3))
    X_train[:, 2] = 7.0  # constant column: centred, not divided by zero
    X_test = rng.normal(3.0, 2.0, (20, 3)) + 100.0
    a, b = datasets.standardize(X_train, X_test)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(a[:, :2].std(axis=0), 1, atol=1e-5)
    assert np.all(np.isfinite(b)) and b[:, 0].mean() > 10  # the shift of the test set is kept


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r"pip install 'bcd_jax\[datasets\]'"):
        datasets.load_digits()


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        datasets.load_dataset("cifar")


# -- scikit-learn's bundled sets (skipped without the extra) --------------------------------


@pytest.mark.parametrize(
    "name, task, shape, classes",
    [
        ("digits", "multiclass", (1797, 64), 10),
        ("breast_cancer", "binary", (569, 30), 2),
        ("diabetes", "regression", (442, 10), None),
    ],
)
def test_bundled_loaders(name, task, shape, classes):
    pytest.importorskip("sklearn")
    data = datasets.load_dataset(name)
    n, d = shape
    assert (data.name, data.task, data.num_classes) == (name, task, classes)
    assert data.X_train.shape[1] == data.X_test.shape[1] == d == data.num_features
    assert len(data.X_train) + len(data.X_test) == n
    assert len(data.X_test) == pytest.approx(0.25 * n, abs=classes or 1)  # stratified: rounded per class
    assert data.X_train.dtype == data.X_test.dtype == np.float32
    assert data.y_train.shape == (len(data.X_train),) and data.y_test.shape == (len(data.X_test),)
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0, atol=1e-5)
    stds = data.X_train.std(axis=0)
    np.testing.assert_allclose(stds[stds > 0], 1, atol=1e-4)
    assert abs(float(data.X_test.mean())) < 0.2  # test statistics were not used, but the split is random
    if classes:
        assert data.y_train.dtype == np.int32 and set(np.unique(data.y_train)) == set(range(classes))
    else:
        assert data.y_train.dtype == np.float32
        np.testing.assert_allclose([data.y_train.mean(), data.y_train.std()], [0, 1], atol=1e-5)
        assert data.target_scale > 1


def test_bundled_split_is_deterministic_and_seeded():
    pytest.importorskip("sklearn")
    a, b, c = datasets.load_digits(seed=0), datasets.load_digits(seed=0), datasets.load_digits(seed=1)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    small = datasets.load_breast_cancer(test_fraction=0.5)
    assert len(small.y_test) == pytest.approx(569 / 2, abs=1)


def test_tiny_fit_on_digits_beats_chance():
    pytest.importorskip("sklearn")
    data = datasets.load_digits().subset(200, 100)
    config = bcd_jax.Config(
        network=bcd_jax.Network(depth=3, width=16, loss="softmax_cross_entropy", bias=True),
        algorithm=bcd_jax.Akiyama(step_size="auto", k_v=5, k_w=5),
        sweeps=8,
    )
    result = bcd_jax.fit(
        data.X_train, data.y_train, config, key=jax.random.key(0), validation=(data.X_test, data.y_test), progress=None
    )
    assert result.diverged_at is None
    assert result.history.train_loss[-1] < result.history.train_loss[0]
    assert result.history.train_accuracy[-1] > 0.6  # chance is 0.1
    assert result.history.val_accuracy[-1] > 0.4


# -- the bundled splits are pinned: a published study and existing callers depend on them ---------

# sha256 (first 16 hex digits) over dtype, shape and bytes of X_train, y_train, X_test, y_test, computed
# with the loaders as they were before load_dataset read files (numpy 2.4, scikit-learn 1.9).
BUNDLED_CHECKSUMS = {
    "digits": "d521578123e99539",
    "breast_cancer": "eeb3bcd0140b5f23",
    "diabetes": "46fe6ce312f66d8d",
}


def split_checksum(data) -> str:
    h = hashlib.sha256()
    for a in (data.X_train, data.y_train, data.X_test, data.y_test):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def original_split(X, y, *, classification, test_fraction=0.25, seed=0, standardize_target=False):
    """A frozen copy of the original split and preprocessing, so the pin does not rest on the code it checks."""
    X, y = np.asarray(X, np.float64), np.asarray(y)
    rng = np.random.default_rng(seed)
    n = len(X)
    if not classification:
        order = rng.permutation(n)
        n_test = max(1, int(round(test_fraction * n)))
        test, train = order[:n_test], order[n_test:]
    else:
        train_parts, test_parts = [], []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            k = int(round(test_fraction * idx.size))
            test_parts.append(idx[:k])
            train_parts.append(idx[k:])
        train, test = rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    X_train, X_test = (((X[i] - mean) / std).astype(np.float32) for i in (train, test))
    if classification:
        y = y.astype(np.int32)
        return X_train, y[train], X_test, y[test]
    y = y.astype(np.float64)
    m, s = (float(y[train].mean()), float(y[train].std())) if standardize_target else (0.0, 1.0)
    return X_train, ((y[train] - m) / s).astype(np.float32), X_test, ((y[test] - m) / s).astype(np.float32)


@pytest.mark.parametrize("name", sorted(BUNDLED_CHECKSUMS))
def test_bundled_defaults_are_bit_identical_to_the_original_loaders(name):
    skd = pytest.importorskip("sklearn.datasets")
    data = datasets.load_dataset(name)
    assert split_checksum(data) == BUNDLED_CHECKSUMS[name]
    assert split_checksum(datasets.DATASETS[name]()) == BUNDLED_CHECKSUMS[name]
    raw = skd.load_diabetes(scaled=False) if name == "diabetes" else getattr(skd, f"load_{name}")()
    expected = original_split(
        raw.data, raw.target, classification=name != "diabetes", standardize_target=name == "diabetes"
    )
    for got, want in zip((data.X_train, data.y_train, data.X_test, data.y_test), expected):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_bundled_non_default_split_matches_the_original_code():
    skd = pytest.importorskip("sklearn.datasets")
    raw = skd.load_digits()
    data = datasets.load_digits(seed=1, test_fraction=0.3)
    expected = original_split(raw.data, raw.target, classification=True, seed=1, test_fraction=0.3)
    for got, want in zip((data.X_train, data.y_train, data.X_test, data.y_test), expected):
        np.testing.assert_array_equal(got, want)
    raw = skd.load_diabetes(scaled=False)
    data = datasets.load_diabetes(standardize_target=False)
    expected = original_split(raw.data, raw.target, classification=False)
    for got, want in zip((data.X_train, data.y_train, data.X_test, data.y_test), expected):
        np.testing.assert_array_equal(got, want)
    assert (data.target_mean, data.target_scale) == (0.0, 1.0)
