"""bcd_jax.datasets: load_dataset for every way data comes in, the bundled sets, the IDX/MNIST reader.

The scikit-learn tests are skipped when the optional extra is not installed. Every file a test
reads (npz, npy, csv, tsv, IDX plain and gzipped, an MNIST folder) is written by the test into
its tmp_path, so nothing is downloaded and no binary is committed.
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


# -- load_dataset: your own data, every way in ---------------------------------------------------
#
# Each file is written to tmp_path by the test. Feature 0 of the generated data is the row's index,
# so a test can tell which rows went where and that nothing was lost or reordered within a row.


def indexed_problem(n=40, d=3, *, labels=None, seed=0):
    """(X, y): column 0 is the row index, the rest noise; y defaults to four balanced classes 0..3."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(n, dtype=np.float64), rng.normal(size=(n, d - 1))])
    y = np.arange(n) % 4 if labels is None else np.asarray(labels)
    return X, y


def rows_of(data, part="train"):
    """The original row indices (column 0) of a split loaded with standardize=False."""
    return getattr(data, f"X_{part}")[:, 0].astype(int)


def assert_round_trip(data, X, y):
    """Train and test together are exactly the file's rows, each with its own label, as float32 / int32."""
    assert data.X_train.dtype == data.X_test.dtype == np.float32
    assert data.y_train.dtype == np.int32
    rows = np.concatenate([rows_of(data, "train"), rows_of(data, "test")])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(X)))
    np.testing.assert_array_equal(data.X_train, X[rows_of(data, "train")].astype(np.float32))
    np.testing.assert_array_equal(data.y_train, y[rows_of(data, "train")])
    np.testing.assert_array_equal(data.y_test, y[rows_of(data, "test")])


def write_delimited(path, header, rows, delimiter=","):
    lines = [delimiter.join(header)] + [delimiter.join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_dataset_from_arrays():
    X, y = indexed_problem()
    data = datasets.load_dataset((X, y), standardize=False)
    assert_round_trip(data, X, y)
    assert (data.name, data.source, data.task, data.num_classes) == ("arrays", "arrays", "multiclass", 4)
    np.testing.assert_array_equal(np.bincount(data.y_test), [2, 2, 2, 2])  # stratified: 10 per class, 2.5 -> 2
    same_dtype = X.astype(np.float32)
    kept = datasets.load_dataset((same_dtype, y), test=(same_dtype, y), standardize=False)
    assert not np.shares_memory(kept.X_train, same_dtype)  # a copy, even with nothing to convert


def test_load_dataset_npz_round_trip_and_keys(tmp_path):
    X, y = indexed_problem()
    np.savez(tmp_path / "data.npz", X=X, y=y)
    data = datasets.load_dataset(tmp_path / "data.npz", standardize=False)
    assert_round_trip(data, X, y)
    assert (data.name, data.source) == ("data", str(tmp_path / "data.npz"))
    np.savez(tmp_path / "lower.npz", x=X, Y=y)  # the other spellings of the default names
    assert_round_trip(datasets.load_dataset(tmp_path / "lower.npz", standardize=False), X, y)
    np.savez(tmp_path / "named.npz", features=X.reshape(40, 3, 1), targets=y)  # (n, h, w) is flattened
    named = datasets.load_dataset(tmp_path / "named.npz", keys=("features", "targets"), standardize=False)
    assert_round_trip(named, X, y)
    with pytest.raises(ValueError, match=r"keys: .* has no array 'X' \(nor 'x'\); it holds \['features', 'targets'\]"):
        datasets.load_dataset(tmp_path / "named.npz")
    with pytest.raises(ValueError, match="label: an .npz file names its arrays with keys"):
        datasets.load_dataset(tmp_path / "named.npz", label="targets")


def test_load_dataset_npy_label_column(tmp_path):
    X, y = indexed_problem()
    np.save(tmp_path / "last.npy", np.column_stack([X, y]))
    assert_round_trip(datasets.load_dataset(tmp_path / "last.npy", standardize=False), X, y)
    np.save(tmp_path / "first.npy", np.column_stack([y, X]))
    data = datasets.load_dataset(tmp_path / "first.npy", label=0, standardize=False)
    assert_round_trip(data, X, y)
    with pytest.raises(ValueError, match=r"label: .* expected the label column's index in \[-4, 3\], got 4"):
        datasets.load_dataset(tmp_path / "first.npy", label=4)
    np.save(tmp_path / "flat.npy", y)
    with pytest.raises(ValueError, match=r"source: .* holds an array of shape \(40,\) .* expected one plain 2-D"):
        datasets.load_dataset(tmp_path / "flat.npy")


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")], ids=["csv", "tsv"])
def test_load_dataset_csv_and_tsv_round_trip(tmp_path, suffix, delimiter):
    X, y = indexed_problem()
    rows = [
        [repr(float(x[0])), repr(float(x[1])), label, repr(float(x[2]))] for x, label in zip(X, y)
    ]  # the label column in the middle
    path = write_delimited(tmp_path / f"table{suffix}", ["id", "a", "label", "b"], rows, delimiter)
    data = datasets.load_dataset(path, standardize=False)
    assert_round_trip(data, X, y)
    assert data.name == "table" and data.num_features == 3
    for name in ("y", "target", "class", "Class"):  # the defaults, then in any case
        write_delimited(path, ["id", "a", name, "b"], rows, delimiter)
        assert_round_trip(datasets.load_dataset(path, standardize=False), X, y)
    write_delimited(path, ["id", "a", "kind", "b"], rows, delimiter)
    assert_round_trip(datasets.load_dataset(path, label="kind", standardize=False), X, y)


def test_load_dataset_csv_label_column_order_of_defaults(tmp_path):
    path = write_delimited(tmp_path / "t.csv", ["target", "y", "f"], [[5, i % 2, i] for i in range(8)])
    data = datasets.load_dataset(path, test_fraction=0.5)  # 'y' comes before 'target'
    assert data.task == "binary" and data.num_features == 2


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_load_dataset_idx_images_and_labels(tmp_path, compress):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    labels = (np.arange(12) % 3).astype(np.uint8)
    gz = ".gz" if compress else ""
    path = write_idx(tmp_path / f"train-images-idx3-ubyte{gz}", images, compress=compress)
    other = write_idx(tmp_path / f"my-labels{gz}", labels, compress=compress)
    data = datasets.load_dataset(path, label=other, standardize=False, test_fraction=0.25)
    assert data.name == "train-images-idx3-ubyte" and data.num_features == 20 and data.num_classes == 3
    X = images.reshape(12, 20).astype(np.float32)
    found = np.concatenate([data.X_train, data.X_test])
    order = [int(np.flatnonzero((X == row).all(axis=1))[0]) for row in found]
    np.testing.assert_array_equal(np.sort(order), np.arange(12))
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]), labels[order])
    with pytest.raises(ValueError, match="label: for the IDX images .* expected the path of the matching IDX labels"):
        datasets.load_dataset(path)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{gz}", labels, compress=compress)  # found from the MNIST naming
    guessed = datasets.load_dataset(path, standardize=False)
    np.testing.assert_array_equal(guessed.X_train, data.X_train)
    write_idx(other, labels[:5], compress=compress)
    with pytest.raises(ValueError, match=r"label: .* holds labels of shape \(5,\); expected \(12,\)"):
        datasets.load_dataset(path, label=other)


def test_load_dataset_mnist_folder(tmp_path):
    arrays = write_mnist(tmp_path, n_train=8, n_test=4)
    data = datasets.load_dataset(tmp_path, standardize=False)
    raw = load_mnist(tmp_path, scaling=None)
    np.testing.assert_array_equal(data.X_train, raw.X_train)
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert (data.task, data.num_classes, data.name) == ("multiclass", 10, tmp_path.name)  # MNIST's ten digits
    standardised = datasets.load_dataset(tmp_path)
    np.testing.assert_allclose(standardised.X_train.mean(axis=0), 0, atol=1e-5)
    val = datasets.load_dataset(tmp_path, validation_fraction=0.25)
    assert len(val.X_train) + len(val.X_val) == 8 and len(val.X_val) >= 1 and len(val.X_test) == 4
    with pytest.raises(ValueError, match="test: the MNIST folder .* holds its own labels and test split"):
        datasets.load_dataset(tmp_path, test=tmp_path)


def test_load_dataset_bundled_with_validation():
    pytest.importorskip("sklearn")
    plain, val = datasets.load_dataset("digits"), datasets.load_dataset("digits", validation_fraction=0.2)
    np.testing.assert_array_equal(val.y_test, plain.y_test)  # the test split is untouched
    assert len(val.X_train) + len(val.X_val) == len(plain.X_train)
    assert datasets.load_digits(validation_fraction=0.2).y_val.shape == val.y_val.shape
    with pytest.raises(ValueError, match="test: the bundled set 'digits' has its own labels and test split"):
        datasets.load_dataset("digits", test="other.csv")


# -- labels: 0..C-1, checked or remapped -----------------------------------------------------------


def test_labels_not_starting_at_zero_name_y_and_the_remap_fix():
    X, _ = indexed_problem()
    y = np.arange(40) % 3 + 1
    with pytest.raises(ValueError, match=r"^y: .* found 3 distinct values \[1, 2, 3\]: they do not start at 0") as info:
        datasets.load_dataset((X, y))
    assert "labels='remap'" in str(info.value) and "1 -> 0, 2 -> 1, 3 -> 2" in str(info.value)
    data = datasets.load_dataset((X, y), labels="remap", standardize=False)
    assert data.num_classes == 3 and data.y_train.dtype == np.int32
    np.testing.assert_array_equal(data.classes, [1, 2, 3])
    np.testing.assert_array_equal(data.classes[data.y_train], y[rows_of(data)])
    assert set(np.unique(data.y_train)) == {0, 1, 2}


def test_labels_with_gaps_or_negative():
    X, _ = indexed_problem()
    gaps = np.array([0, 2, 5, 5] * 10)
    with pytest.raises(ValueError, match=r"^y: .* \[0, 2, 5\]: they have gaps \(3 missing: \[1, 3, 4\]\)"):
        datasets.load_dataset((X, gaps))
    data = datasets.load_dataset((X, gaps), labels="remap")
    np.testing.assert_array_equal(data.classes, [0, 2, 5])
    assert data.num_classes == 3
    declared = datasets.load_dataset((X, gaps), num_classes=6)  # classes absent from the data, said so
    assert declared.num_classes == 6 and set(np.unique(declared.y_train)) == {0, 2, 5}
    with pytest.raises(ValueError, match="num_classes: the labels need at least 6 classes .* got 5"):
        datasets.load_dataset((X, gaps), num_classes=5)
    with pytest.raises(ValueError, match=r"^y: .* some are negative"):
        datasets.load_dataset((X, np.arange(40) % 3 - 1))


def test_string_labels_error_and_remap(tmp_path):
    rows = [[i, ["cat", "dog", "emu"][i % 3]] for i in range(30)]
    path = write_delimited(tmp_path / "animals.csv", ["size", "class"], rows)
    with pytest.raises(
        ValueError, match=r"^y \(column 'class' of '.*animals.csv'\): .* \['cat', 'dog', 'emu'\]: they are strings"
    ):
        datasets.load_dataset(path)
    data = datasets.load_dataset(path, labels="remap")
    assert (data.task, data.num_classes) == ("multiclass", 3)
    np.testing.assert_array_equal(data.classes, ["cat", "dog", "emu"])
    assert "remapped from ['cat', 'dog', 'emu']" in datasets.describe(data)


@pytest.mark.parametrize("values", [[-1, 1], ["no", "yes"]], ids=["minus_one_one", "no_yes"])
def test_binary_labels_must_be_zero_one(values):
    X, _ = indexed_problem()
    y = np.array(values * 20)
    with pytest.raises(ValueError, match=r"^y: class labels for task='binary' .* must be the integers 0 and 1") as info:
        datasets.load_dataset((X, y))
    assert f"{values[0]!r} -> 0, {values[1]!r} -> 1" in str(info.value)
    data = datasets.load_dataset((X, y), labels="remap")
    assert (data.task, data.num_classes) == ("binary", 2) and set(np.unique(data.y_train)) == {0, 1}
    np.testing.assert_array_equal(data.classes, values)
    zero_one = datasets.load_dataset((X, np.array([0, 1] * 20)))  # passes as is
    assert zero_one.task == "binary" and zero_one.classes is None
    with pytest.raises(ValueError, match="y: task='binary' needs at most two distinct labels, found 4"):
        datasets.load_dataset((X, np.arange(40) % 4), task="binary")


def test_non_integer_labels_with_a_classification_task():
    X, _ = indexed_problem()
    y = np.linspace(0, 1, 40)
    with pytest.raises(ValueError, match=r"^y: class labels for task='multiclass' .* some are not integers"):
        datasets.load_dataset((X, y), task="multiclass")
    with pytest.raises(ValueError, match="labels: 'remap' maps class labels to 0..C-1, but the task is 'regression'"):
        datasets.load_dataset((X, y), labels="remap")
    with pytest.raises(ValueError, match="labels: 'remap' .* task is 'regression'"):
        datasets.load_dataset((X, np.arange(40) % 4), task="regression", labels="remap")
    with pytest.raises(ValueError, match=r"y: .* is nan; expected finite labels"):
        datasets.load_dataset((X, np.where(np.arange(40) == 7, np.nan, y)))


def test_task_inference():
    X, _ = indexed_problem()
    infer = lambda y, **kw: datasets.load_dataset((X, np.asarray(y)), **kw)  # noqa: E731
    assert infer(np.arange(40) % 4).task == "multiclass"
    assert infer(np.arange(40) % 2).task == "binary"
    assert infer((np.arange(40) % 2).astype(np.float64)).task == "binary"  # integer-valued floats are classes
    assert infer(np.arange(40) % 2, num_classes=3).task == "multiclass"
    regression = infer(np.linspace(-1, 1, 40))
    assert (regression.task, regression.num_classes, regression.y_train.dtype) == ("regression", None, np.float32)
    assert infer(np.arange(40) % 4, task="regression").task == "regression"  # integer targets: say so
    with pytest.raises(ValueError, match="task='regression' if y is a continuous target"):
        infer(np.arange(40) * 3)
    with pytest.raises(ValueError, match="num_classes: only classification has classes"):
        infer(np.linspace(-1, 1, 40), num_classes=3)
    with pytest.raises(ValueError, match="num_classes: a binary task has 2 classes, got 3"):
        infer(np.arange(40) % 2, task="binary", num_classes=3)
    with pytest.raises(ValueError, match="task: expected one of"):
        infer(np.arange(40) % 2, task="classification")


# -- standardisation, validation split, separate test file ---------------------------------------


def test_standardisation_uses_training_statistics_only(tmp_path):
    rng = np.random.default_rng(3)
    X_train = rng.normal(2.0, 3.0, (30, 3))
    X_train[:, 1] = 5.0  # constant in the training file: centred only
    X_test = rng.normal(-4.0, 1.0, (10, 3))
    y_train, y_test = np.arange(30) % 2, np.arange(10) % 2
    np.savez(tmp_path / "train.npz", X=X_train, y=y_train)
    np.savez(tmp_path / "test.npz", X=X_test, y=y_test)
    data = datasets.load_dataset(tmp_path / "train.npz", test=tmp_path / "test.npz", validation_fraction=0.2)
    mean, std = data.X_train.mean(axis=0), data.X_train.std(axis=0)
    np.testing.assert_allclose(mean, 0, atol=1e-6)
    np.testing.assert_allclose(std[[0, 2]], 1, atol=1e-6)
    assert np.all(data.X_train[:, 1] == 0)
    np.testing.assert_allclose(data.X_test[:, 1], X_test[:, 1] - 5.0, rtol=1e-6)  # the training mean, scale 1
    assert data.X_test[:, 0].mean() < -1  # the test set's shift is kept: its own statistics were not used
    raw = datasets.load_dataset(
        tmp_path / "train.npz", test=tmp_path / "test.npz", validation_fraction=0.2, standardize=False, dtype="float64"
    )
    np.testing.assert_array_equal(raw.X_test, X_test)  # standardize=False: as given
    m, s = raw.X_train[:, 0].mean(), raw.X_train[:, 0].std()
    np.testing.assert_allclose(data.X_val[:, 0], (raw.X_val[:, 0] - m) / s, rtol=1e-5)  # validation: training stats
    np.testing.assert_allclose(data.X_test[:, 0], (X_test[:, 0] - m) / s, rtol=1e-5)
    np.testing.assert_array_equal(
        datasets.load_dataset(tmp_path / "train.npz", test=tmp_path / "test.npz", standardize=False).X_test,
        X_test.astype(np.float32),  # float64 input becomes float32 unless dtype= says otherwise
    )
    wide = datasets.load_dataset(tmp_path / "train.npz", test=tmp_path / "test.npz", dtype="float64")
    assert wide.X_train.dtype == wide.X_test.dtype == np.float64


def test_regression_targets_left_as_given_unless_asked():
    X, _ = indexed_problem()
    y = np.linspace(10.0, 20.0, 40) + 0.5
    given = datasets.load_dataset((X, y), standardize=False)
    np.testing.assert_allclose(given.y_train, y[rows_of(given)], rtol=1e-6)
    assert (given.target_mean, given.target_scale) == (0.0, 1.0)
    scaled = datasets.load_dataset((X, y), standardize_target=True, validation_fraction=0.25, standardize=False)
    train_targets = y[rows_of(scaled)]
    assert scaled.target_mean == pytest.approx(train_targets.mean()) and scaled.target_scale == pytest.approx(
        train_targets.std()
    )
    np.testing.assert_allclose(
        scaled.y_val, (y[rows_of(scaled, "val")] - train_targets.mean()) / train_targets.std(), rtol=1e-5
    )
    with pytest.raises(ValueError, match="standardize_target: only regression targets can be standardised"):
        datasets.load_dataset((X, np.arange(40) % 2), standardize_target=True)


def test_validation_split_is_disjoint_seeded_and_leaves_the_test_split_alone():
    X, y = indexed_problem(n=80)
    load = lambda **kw: datasets.load_dataset((X, y), standardize=False, **kw)  # noqa: E731
    data = load(validation_fraction=0.25, seed=5)
    train, val, test = rows_of(data), rows_of(data, "val"), rows_of(data, "test")
    assert set(train).isdisjoint(val) and set(train).isdisjoint(test) and set(val).isdisjoint(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(80))
    np.testing.assert_array_equal(data.y_val, y[val])
    np.testing.assert_array_equal(np.bincount(data.y_val), [4, 4, 4, 4])  # stratified: 15 per class, 3.75 -> 4
    again, other, none = load(validation_fraction=0.25, seed=5), load(validation_fraction=0.25, seed=6), load(seed=5)
    np.testing.assert_array_equal(rows_of(again, "val"), val)
    np.testing.assert_array_equal(rows_of(again), train)
    assert not np.array_equal(np.sort(rows_of(other, "val")), np.sort(val))
    np.testing.assert_array_equal(rows_of(none, "test"), test)  # the test split does not depend on it
    assert none.X_val is None and none.y_val is None
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"validation_fraction: expected a number in \[0, 1\)"):
            load(validation_fraction=bad)
    with pytest.raises(ValueError, match="validation_fraction: 0.01 of n = 60 leaves an empty part"):
        load(validation_fraction=0.01)


def test_separate_test_file(tmp_path):
    train_rows = [[i, 2 * i, ["low", "high"][i % 2]] for i in range(10)]
    test_rows = [[f"{i}.5", ["low", "high"][i % 2], i] for i in range(4)]  # other column order, by name
    train = write_delimited(tmp_path / "train.csv", ["a", "b", "label"], train_rows)
    test = write_delimited(tmp_path / "test.csv", ["a", "label", "b"], test_rows)
    data = datasets.load_dataset(train, test=test, labels="remap", standardize=False)
    assert (len(data.X_train), len(data.X_test)) == (10, 4)  # no test_fraction split
    np.testing.assert_array_equal(data.X_train[:, 0], np.arange(10))  # the file's order
    np.testing.assert_array_equal(data.X_test, [[i + 0.5, i] for i in range(4)])
    np.testing.assert_array_equal(data.classes, ["high", "low"])
    np.testing.assert_array_equal(data.y_test, [1, 0, 1, 0])
    write_delimited(tmp_path / "other.csv", ["a", "c", "label"], train_rows)
    with pytest.raises(ValueError, match=r"test: .* missing \['b'\], extra \['c'\]"):
        datasets.load_dataset(train, test=tmp_path / "other.csv", labels="remap")
    np.save(tmp_path / "test.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"test: expected a file of the same kind as .* \(csv\), got .* \(npy\)"):
        datasets.load_dataset(train, test=tmp_path / "test.npy")
    X, y = indexed_problem()
    arrays = datasets.load_dataset((X, y), test=(X[:8], y[:8]), standardize=False)
    np.testing.assert_array_equal(arrays.X_test, X[:8].astype(np.float32))
    with pytest.raises(ValueError, match=r"test \(X\): 2 features; expected 3"):
        datasets.load_dataset((X, y), test=(X[:8, :2], y[:8]))


# -- CSV errors and the rest of the argument checks ---------------------------------------------


def test_csv_errors_name_the_file_row_and_column(tmp_path):
    path = write_delimited(tmp_path / "bad.csv", ["height", "weight", "kind"], [[1, 2, 0], [3, 4, 1]])
    with pytest.raises(
        ValueError, match=r"label: .*bad.csv' has no label column named 'label', 'y', 'target' or 'class'"
    ) as info:
        datasets.load_dataset(path)
    assert "['height', 'weight', 'kind']" in str(info.value)
    with pytest.raises(
        ValueError, match=r"label: .* has no column 'species'; its columns are \['height', 'weight', 'kind'\]"
    ):
        datasets.load_dataset(path, label="species")
    write_delimited(path, ["height", "weight", "label"], [[1, 2, 0], [3, "n/a", 1], [5, 6, 0]])
    with pytest.raises(
        ValueError, match=r"source: '.*bad.csv' row 2 \(line 3\), column 'weight': 'n/a' is not a number"
    ):
        datasets.load_dataset(path)
    write_delimited(path, ["height", "weight", "label"], [[1, 2, 0], [3, "inf", 1]])
    with pytest.raises(ValueError, match=r"row 2 \(line 3\), column 'weight': 'inf' is not a finite number"):
        datasets.load_dataset(path)
    write_delimited(path, ["height", "weight", "label"], [[1, 2, 0], [3, 1]])
    with pytest.raises(ValueError, match=r"row 2 \(line 3\) has 2 cells; expected 3"):
        datasets.load_dataset(path)
    write_delimited(path, ["height", "weight", "label"], [[1, 2, 0], [3, 4, ""]])
    with pytest.raises(ValueError, match=r"row 2 \(line 3\), label column 'label': ''; expected a label"):
        datasets.load_dataset(path)
    path.write_text("")
    with pytest.raises(ValueError, match="source: .* is empty; expected a header row"):
        datasets.load_dataset(path)


def test_load_dataset_argument_errors(tmp_path):
    X, y = indexed_problem()
    with pytest.raises(ValueError, match="source: unknown data set 'nowhere.csv'"):
        datasets.load_dataset("nowhere.csv")
    with pytest.raises(ValueError, match="source: no file or folder at"):
        datasets.load_dataset(tmp_path / "nowhere.csv")
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(ValueError, match=r"source: path: .*notes.txt' is not an IDX file.*any other file as IDX"):
        datasets.load_dataset(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="source: expected a pair"):
        datasets.load_dataset((X, y, y))
    with pytest.raises(ValueError, match="labels: expected 'check' or 'remap', got 'fix'"):
        datasets.load_dataset((X, y), labels="fix")
    with pytest.raises(ValueError, match="dtype: expected a floating dtype .* got int32"):
        datasets.load_dataset((X, y), dtype="int32")
    with pytest.raises(ValueError, match="seed: expected an int >= 0, got -1"):
        datasets.load_dataset((X, y), seed=-1)
    with pytest.raises(ValueError, match="standardize: expected True, False or None, got 'yes'"):
        datasets.load_dataset((X, y), standardize="yes")
    with pytest.raises(ValueError, match="keys: only an .npz file has named arrays"):
        np.save(tmp_path / "a.npy", np.column_stack([X, y]))
        datasets.load_dataset(tmp_path / "a.npy", keys=("a", "b"))
    with pytest.raises(ValueError, match=r"source \(X\): row 3, column 1 is nan; expected finite numbers"):
        datasets.load_dataset((np.where(np.arange(120).reshape(40, 3) == 10, np.nan, X), y))
    with pytest.raises(ValueError, match=r"y: expected one label per sample, shape \(40,\), got \(39,\)"):
        datasets.load_dataset((X, y[:39]))


def test_describe_is_one_line():
    X, y = indexed_problem()
    line = datasets.describe(datasets.load_dataset((X, y), validation_fraction=0.25))
    assert line == "arrays: 24 train / 8 val / 8 test, 3 features, multiclass, 4 classes"
    line = datasets.describe(datasets.load_dataset((X, np.linspace(0, 1, 40)), standardize_target=True))
    assert line.startswith("arrays: 30 train / 0 val / 10 test, 3 features, regression, target standardised (mean")
    assert "\n" not in line
