"""The ``bcd-jax`` command line, called in-process (``bcd_jax.cli.main``) on a tiny experiment file.

Every run here uses one network structure and one sweep per compiled chunk (``sweeps <= 20``, or
``--checkpoint-every 1``), so that the runs share their compiled program.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import bcd_jax
from bcd_jax import cli
from bcd_jax.config import config_from_dict, parse_assignments
from bcd_jax.datasets import load_dataset
from bcd_jax.driver.checkpoint import read_checkpoint_meta
from bcd_jax.experiments import (
    DataSpec,
    Experiment,
    experiment_data,
    load_experiment,
    plot_experiment,
    run_experiment,
    summarize,
)
from bcd_jax.experiments.folder import CHECKPOINT_DIR, VIEW_FILES, check_folder

from helpers import REPO, cli_command, cli_env

TINY = """
[network]
depth = 3
width = 4
[algorithm]
name = "monotone"
k_v = 3
k_w = 3
[hyper]
eta_v = 0.2
eta_w = 0.2
eta_w1 = 0.2
[run]
sweeps = 4
[data]
n = 16
d_in = 24
teacher_width = 4
[experiment]
compare = ["relu_noskip"]
"""
GRID = TINY.split("[experiment]")[0].replace("sweeps = 4", "sweeps = 3")
RUN_CONFIG = ("network", "algorithm", "hyper", "run", "stop")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def grid_file(tmp_path, grid='"hyper.gamma" = [0.1, 0.2]\nseed = [0, 1]\n', table="grid"):
    path = tmp_path / "s.toml"
    path.write_text(GRID + f"[{table}]\n" + grid)
    return path


def _no_nan(name):
    raise ValueError(f"non-standard JSON constant {name}")


def read_jsonl(path):
    """Strict JSON lines (NaN / Infinity are errors)."""
    return [json.loads(line, parse_constant=_no_nan) for line in path.read_text().splitlines()]


def read_json(path):
    return json.loads(path.read_text(), parse_constant=_no_nan)


def run_config(saved: dict) -> bcd_jax.Config:
    """The Config a config.json records (its run tables)."""
    return config_from_dict({k: v for k, v in saved.items() if k in RUN_CONFIG})


def weights(path) -> dict[str, np.ndarray]:
    """The weights of a params.npz (without its run id and sweep stamps)."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files if k.startswith("W_")}


def view_run_ids(out: Path) -> dict[str, set]:
    """The run id every view file of ``out`` carries (read from each file itself)."""
    from PIL import Image

    ids = {
        "config.json": {read_json(out / "config.json")["run_id"]},
        "metrics.json": {read_json(out / "metrics.json")["run_id"]},
        "diagnostics.jsonl": {line["run_id"] for line in read_jsonl(out / "diagnostics.jsonl")},
    }
    with np.load(out / "params.npz") as f:
        ids["params.npz"] = {str(f["run_id"])}
    with Image.open(out / "loss.png") as image:
        ids["loss.png"] = {image.info["Description"].removeprefix("bcd_jax run ")}
    return ids


def test_experiment_file_runs_the_comparisons_from_the_same_weights(tiny, tmp_path):
    experiment = load_experiment(tiny)
    assert experiment.data == DataSpec(n=16, d_in=24, teacher_width=4) and experiment.compare == ("relu_noskip",)
    results = run_experiment(experiment.with_overrides({"sweeps": 2}), progress=None)
    assert list(results) == ["monotone", "relu_noskip"]
    assert results["relu_noskip"].config.algorithm.name == "relu_noskip"
    assert results["relu_noskip"].config.algorithm.k_v == 3  # the structure it shares is kept
    # Same data and initial weights, on the same (plain) network: the same initial error.
    assert results["relu_noskip"].history.train_mse[0] == results["monotone"].history.train_mse[0]
    summary = summarize(results["monotone"])
    assert summary["algorithm"] == "monotone" and summary["sweeps_completed"] == 2
    assert len(summary["final_layer_losses"]) == 2
    plot_experiment(results, tmp_path / "fig" / "f.png", title="tiny")
    assert (tmp_path / "fig" / "f.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            '[experiment]\ncompare = ["nope"]\n',
            r"\[experiment\] algorithm: unknown algorithm 'nope'; expected one of \[",
        ),
        ("[data]\nsize = 3\n", r"unknown key\(s\) \['size'\] in \[data\]"),
        ("[data]\nn = 0\n", r"\[data\] data.n: expected an int >= 1, got 0"),
        # Reliability round 2: the run table is named as [run], and an [algorithm] typo names the option.
        ("[run]\nsweeps = 0\n", r"\[run\] sweeps: expected an int >= 1, got 0"),
        (
            '[algorithm]\nname = "monotone"\nk_vv = 3\n',
            r"\[algorithm\] algorithm: unknown option\(s\) \['k_vv'\] for 'monotone'; expected some of \[.*'k_v'",
        ),
    ],
)
def test_bad_experiment_files_name_the_table(tmp_path, extra, message):
    path = tmp_path / "bad.toml"
    path.write_text(extra)
    with pytest.raises(ValueError, match=message):
        load_experiment(path)


def test_run_writes_one_consistent_output_folder(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(tiny), "--out", str(out), "--set", "hyper.gamma=0.3", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    files = ["checkpoint", "config.json", "diagnostics.jsonl", "loss.png", "metrics.json", "params.npz"]
    assert sorted(p.name for p in out.iterdir()) == files

    saved = read_json(out / "config.json")
    assert saved["hyper"]["gamma"] == 0.3 and saved["run"]["sweeps"] == 4 and saved["data"]["n"] == 16
    config = run_config(saved)
    assert config.to_dict() == {k: v for k, v in saved.items() if k in RUN_CONFIG}
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=16, d_in=24, teacher_width=4)
    expected = bcd_jax.fit(X, Y, config, key=jax.random.key(config.seed), progress=None)

    lines = read_jsonl(out / "diagnostics.jsonl")
    assert [line["sweep"] for line in lines] == [0, 1, 2, 3, 4]
    scalars = [name for name in bcd_jax.SweepInfo._fields if name != "extras"]
    assert {"run_id", "sweep", *scalars, "output_loss", "layer_losses", "spectral"} <= set(lines[0])
    for name in scalars:
        written = np.array([line[name] for line in lines], dtype=float)  # null -> NaN
        np.testing.assert_array_equal(written, getattr(expected.history, name), err_msg=name)
    layer_losses = np.array([line["layer_losses"] for line in lines], dtype=float)
    np.testing.assert_array_equal(layer_losses, expected.history.extras.layer_losses)
    metrics = read_json(out / "metrics.json")
    assert metrics["train_mse"] == pytest.approx(float(expected.history.train_mse[-1]))
    assert (
        metrics["sweeps_completed"] == 4
        and metrics["status"] == "budget"
        and metrics["status_code"] == int(bcd_jax.Status.BUDGET)
    )
    assert "test_mse" not in metrics  # no held-out teacher samples
    assert sorted(weights(out / "params.npz")) == ["W_1", "W_2", "W_3"]
    for j, w in enumerate(expected.params, start=1):
        np.testing.assert_array_equal(weights(out / "params.npz")[f"W_{j}"], w)
    assert (out / "loss.png").read_bytes()[:8] == PNG

    # Reliability round 2: the folder obeys its rule, and every view is of the checkpoint's run.
    run_id = read_checkpoint_meta(out / CHECKPOINT_DIR)["run_id"]
    assert check_folder(out) == []
    assert view_run_ids(out) == {name: {run_id} for name in VIEW_FILES}
    assert metrics["run_id"] == run_id and metrics["sweep"] == 4


def test_run_on_a_bundled_data_set_writes_its_test_metrics(tmp_path, capsys):
    """An experiment file can name a real data set; the run is tested on its test split."""
    path = tmp_path / "cancer.toml"
    path.write_text(
        '[network]\ndepth = 2\nwidth = 8\nloss = "logistic"\nbias = true\n'
        '[algorithm]\nname = "whole_objective"\n[run]\nsweeps = 3\n'
        '[data]\ndataset = "breast_cancer"\ntest_fraction = 0.3\nseed = 2\n'
    )
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "breast_cancer: 398 train / 0 val / 171 test" in printed and "test_accuracy" in printed
    data = load_dataset("breast_cancer", test_fraction=0.3, seed=2)
    config = run_config(read_json(out / "config.json"))
    expected = bcd_jax.fit(
        data.X_train, data.y_train, config, key=jax.random.key(0), test=(data.X_test, data.y_test), progress=None
    )
    metrics = read_json(out / "metrics.json")
    assert metrics["data"] == "breast_cancer" and metrics["sweeps_completed"] == 3
    assert metrics["test_accuracy"] == pytest.approx(float(expected.history.test_accuracy[-1]))
    assert metrics["test_loss"] == pytest.approx(float(expected.history.test_loss[-1]))
    assert metrics["train_accuracy"] == pytest.approx(float(expected.history.train_accuracy[-1]))
    assert "val_accuracy" not in metrics  # no validation split asked for
    assert metrics["rate"].startswith("K=")  # whole_objective never increases F


def test_a_data_set_run_without_scikit_learn_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    path = tmp_path / "digits.toml"
    path.write_text('[network]\nloss = "softmax_cross_entropy"\n[data]\ndataset = "digits"\n')
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bcd_jax[datasets]'" in err
    assert not out.exists()  # refused before any folder was made


def test_a_classification_data_set_with_the_squared_loss_is_refused_naming_the_fix(tmp_path, capsys):
    """Reliability round 2: digits with the default (regression) loss, refused before any folder is made."""
    path = tmp_path / "digits.toml"
    path.write_text('[data]\ndataset = "digits"\n')
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "network.loss: 'squared' is a regression loss but the data 'digits' are multiclass (10 classes)" in err
    assert "use network.loss = 'squared_multiclass'" in err
    assert not out.exists()


def test_a_csv_file_with_string_labels_runs_with_a_validation_split(tmp_path, capsys):
    """Reliability round 2: a user's CSV file (string labels remapped), scored on validation and test."""
    rng = np.random.default_rng(0)
    species = np.array(["setosa", "versicolor", "virginica"])
    labels = rng.integers(0, 3, 90)
    features = rng.normal(size=(90, 4)) + labels[:, None]
    rows = [",".join([*(f"{v:.5f}" for v in x), species[c]]) for x, c in zip(features, labels)]
    (tmp_path / "data.csv").write_text("f1,f2,f3,f4,species\n" + "\n".join(rows) + "\n")
    path = tmp_path / "csv.toml"
    path.write_text(
        '[network]\ndepth = 2\nwidth = 8\nbias = true\nloss = "squared_multiclass"\n'
        '[algorithm]\nname = "whole_objective"\n[run]\nsweeps = 2\n'
        '[data]\npath = "data.csv"\nlabel = "species"\nlabels = "remap"\nvalidation_fraction = 0.2\n'
    )
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "remapped from" in printed and "setosa" in printed
    metrics = read_json(out / "metrics.json")
    assert metrics["sweeps_completed"] == 2 and metrics["status"] == "budget"
    for name in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert 0 <= metrics[name] <= 1, name
    assert metrics["val_loss"] >= 0 and metrics["test_loss"] >= 0
    assert read_json(out / "config.json")["data"]["path"] == str(tmp_path / "data.csv")


@pytest.mark.parametrize(
    "table, message",
    [
        (
            'dataset = "mnist"',
            r"data.dataset: expected one of \('teacher', 'file', 'breast_cancer', 'diabetes', 'digits'\), got 'mnist'",
        ),
        ('dataset = "digits"\nn = 40', r"\['n'\] describe the teacher problem"),
        ('dataset = "digits"\ntest_fraction = 1.0', r"data.test_fraction"),
        ("n_test = -1", r"data.n_test: expected an int >= 0"),
    ],
)
def test_bad_data_tables_are_named(tmp_path, table, message):
    path = tmp_path / "bad.toml"
    path.write_text("[data]\n" + table + "\n")
    with pytest.raises(ValueError, match=message):
        load_experiment(path)


@pytest.mark.parametrize(
    "config, data",
    [
        (
            bcd_jax.Config(
                network=bcd_jax.Network(depth=3, width=7, activation=("tanh_shortcut", "leaky_relu"), bias=True),
                algorithm=bcd_jax.Akiyama("monotone", k_v=3, svb=(0.5, 1.5)),
                hyper={"gamma": 0.3},
                sweeps=4,
                seed=2,
            ),
            DataSpec(n=20, d_in=30, n_test=5),
        ),
        (
            bcd_jax.Config(
                network=bcd_jax.Network(depth=2, width=9, bias="all", loss="squared_multiclass"),
                algorithm=bcd_jax.Zeng("three"),
                hyper={"alpha": 2.0},
            ),
            DataSpec(dataset="digits", test_fraction=0.3, seed=1),
        ),
    ],
)
def test_experiment_dumps_reads_back_as_the_same_experiment(tmp_path, config, data):
    path = tmp_path / "run.toml"
    path.write_text(Experiment(config, data).dumps(header="measured: 97%\nsecond line"))
    assert path.read_text().startswith("# measured: 97%\n# second line\n")
    loaded = load_experiment(path)
    assert loaded.config == config and loaded.config.hyper == config.hyper and loaded.data == data


def test_teacher_test_samples_come_from_the_same_teacher():
    config = bcd_jax.Config(network=bcd_jax.Network(depth=2, width=3))
    split = experiment_data(Experiment(config, DataSpec(n=10, d_in=12, teacher_width=3, n_test=5, seed=3)))
    X, Y = bcd_jax.teacher_problem(jax.random.key(3), n=10, d_in=12, teacher_width=3)
    np.testing.assert_array_equal(split.X_train, X)
    np.testing.assert_array_equal(split.y_train, Y)
    assert split.X_test.shape == (5, 12) and not np.allclose(split.X_test[:5], X[:5])
    # the teacher of the training targets, drawn as bcd_jax.teacher_problem documents it
    _, kb, ka = jax.random.split(jax.random.key(3), 3)
    B = np.asarray(jax.random.normal(kb, (3, 12))) / np.sqrt(12)
    A = np.asarray(jax.random.normal(ka, (1, 3))) / np.sqrt(3)
    teacher = lambda x: np.maximum(x @ B.T, 0.5 * (x @ B.T)) @ A.T  # noqa: E731
    np.testing.assert_allclose(teacher(np.asarray(X)), Y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(teacher(split.X_test), split.y_test, rtol=1e-5, atol=1e-6)


def test_existing_output_folder_is_not_overwritten(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out:" in err and "holds files bcd-jax did not write (notes.txt)" in err
    assert "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "params.npz").is_file()
    first = read_checkpoint_meta(out / CHECKPOINT_DIR)["run_id"]
    # A folder holding a run is refused without --overwrite, naming the run and both ways on.
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--set", "hyper.gamma=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"holds run {first} (4 sweeps)" in err
    assert "--overwrite" in err and f"--resume {out}" in err
    # A second --overwrite starts afresh (the old checkpoint is not mistaken for a resume).
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--overwrite", "--set", "hyper.gamma=0.1"]) == 0
    saved = read_json(out / "config.json")
    assert saved["hyper"]["gamma"] == 0.1 and saved["run_id"] != first and check_folder(out) == []
    assert (out / "notes.txt").read_text() == "mine"


def test_default_output_folder_is_results_config_stem(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(tiny), "--quiet"]) == 0
    assert (tmp_path / "results" / "tiny" / "diagnostics.jsonl").is_file()


def test_set_values_follow_toml():
    items = [
        "sweeps=50",
        "hyper.gamma=0.3",
        "algorithm.svb=[0.5,1.5]",
        "algorithm.inner=exact",
        'algorithm.name="relu_skip"',
        "data.n = 200",
    ]
    assert parse_assignments(items, "--set") == {
        "sweeps": 50,
        "hyper.gamma": 0.3,
        "algorithm.svb": [0.5, 1.5],
        "algorithm.inner": "exact",
        "algorithm.name": "relu_skip",
        "data.n": 200,
    }
    changed = Experiment().with_overrides(
        {"sweeps": 50, "algorithm.svb": [0.5, 1.5], "data.n": 200, "network.width": 8, "seed": 3, "hyper.gamma": 0.3}
    )
    config = changed.config
    assert config.sweeps == 50 and config.algorithm.svb == (0.5, 1.5) and changed.data.n == 200
    assert config.network.width == 8 and config.seed == 3 and config.hyper.gamma == 0.3
    config = Experiment().with_overrides({"algorithm.name": "relu_skip", "algorithm.k_v": 7}).config
    assert config.algorithm.name == "relu_skip" and config.algorithm.k_v == 7


@pytest.mark.parametrize(
    "item, message",
    [
        ("widht=3", "--set widht=3: widht: unknown key; expected 'sweeps', 'seed', 'network.<field>'"),
        ("network.widht=3", "--set network.widht=3: network.widht: unknown field of [network]; expected one of"),
        ("gamma=0.3", "(did you mean 'hyper.gamma'?)"),
        ("width=3", "(did you mean 'network.width'?)"),
        ("data.size=3", "--set data.size=3: data.size: unknown field of [data]"),
        ("sweeps", "--set: expected key=value, got 'sweeps'"),
        ("hyper.gamma=-1", "--set hyper.gamma=-1: overrides: [hyper] hyper.gamma: expected a number in (0, inf"),
        ("sweeps=2.5", "--set sweeps=2.5: overrides: [run] sweeps: expected an int, got float 2.5"),
        ("data.n=0", "--set data.n=0: overrides: [data] data.n: expected an int >= 1, got 0"),
        ("algorithm.name=nope", "--set algorithm.name='nope': algorithm: unknown algorithm 'nope'; expected one of"),
        ("algorithm.k_vv=3", "--set algorithm.k_vv=3: algorithm.k_vv: unknown field of [algorithm]; expected one of"),
    ],
)
def test_bad_set_is_a_clear_error(tiny, tmp_path, capsys, item, message):
    assert cli.main(["run", str(tiny), "--out", str(tmp_path / "x"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "unexpected keyword argument" not in err
    assert not (tmp_path / "x").exists()


def test_switching_the_family_keeps_the_shared_hyperparameters():
    """Reliability round 2: --set algorithm.name=monotone on a whole_objective experiment keeps the
    hyperparameters the two families share (gamma, weight_decay)."""
    whole = Experiment(
        bcd_jax.Config(algorithm="whole_objective", hyper={"gamma": 0.7, "weight_decay": 0.01, "decay": 0.5})
    )
    switched = whole.with_overrides({"algorithm.name": "monotone"}).config
    assert switched.algorithm.name == "monotone"
    assert switched.hyper == bcd_jax.AkiyamaHyper(gamma=0.7, weight_decay=0.01)  # eta_* at Akiyama's defaults
    assert whole.config.with_overrides({"algorithm.name": "monotone"}) == switched
    back = switched.with_overrides({"algorithm.name": "whole_objective"})
    assert (back.hyper.gamma, back.hyper.weight_decay, back.hyper.decay) == (0.7, 0.01, 1.0)


def test_checkpoint_every_and_resume_continue_the_run_with_its_own_configuration(tiny, tmp_path, capsys):
    """Reliability round 2: --resume DIR --set sweeps=N continues the checkpoint's run (its --set values
    included, the experiment file not needed) and equals an uninterrupted run bit for bit."""
    first, whole = tmp_path / "first", tmp_path / "whole"
    started = ["--set", "sweeps=4", "--set", "hyper.gamma=0.3", "--checkpoint-every", "1", "--quiet"]
    assert cli.main(["run", str(tiny), "--out", str(first), *started]) == 0
    assert (first / CHECKPOINT_DIR / "checkpoint.npz").is_file()
    run_id = read_checkpoint_meta(first / CHECKPOINT_DIR)["run_id"]
    assert cli.main(["run", "--resume", str(first), "--set", "sweeps=6", "--checkpoint-every", "1", "--quiet"]) == 0
    straight = ["--set", "sweeps=6", "--set", "hyper.gamma=0.3", "--checkpoint-every", "1", "--quiet"]
    assert cli.main(["run", str(tiny), "--out", str(whole), *straight]) == 0

    saved = read_json(first / "config.json")
    assert saved["run"]["sweeps"] == 6 and saved["hyper"]["gamma"] == 0.3 and saved["run_id"] == run_id
    resumed, uninterrupted = read_jsonl(first / "diagnostics.jsonl"), read_jsonl(whole / "diagnostics.jsonl")
    assert len(resumed) == 7 and {line.pop("run_id") for line in resumed} == {run_id}
    assert resumed == [{k: v for k, v in line.items() if k != "run_id"} for line in uninterrupted]
    a, b = weights(first / "params.npz"), weights(whole / "params.npz")
    assert sorted(a) == sorted(b) == ["W_1", "W_2", "W_3"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert check_folder(first) == [] and read_json(first / "metrics.json")["sweeps_completed"] == 6
    capsys.readouterr()

    # Naming the experiment file too: it is not read (the checkpoint's configuration is the run's).
    assert cli.main(["run", str(tiny), "--resume", str(first), "--quiet"]) == 0
    assert f"--resume uses the configuration kept in {first}; {tiny} is not read" in capsys.readouterr().out
    assert cli.main(["run", "--resume", str(tmp_path / "none"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume: " in err and "holds no checkpoint" in err
    assert cli.main(["run", "--resume", str(first), "--set", "network.width=5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "belongs to another config (network.width: checkpoint 4 vs now 5)" in err
    assert cli.main(["run", "--resume", str(first), "--set", "sweeps=3", "--quiet"]) == 2
    assert "already holds 6 sweeps; expected sweeps >= 6" in capsys.readouterr().err
    assert cli.main(["run", "--resume", str(first), "--out", str(whole), "--quiet"]) == 2
    assert "--out: " in capsys.readouterr().err


def test_run_that_diverges_exits_with_status_3(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the divergence is reported as one line, not as a warning
        status = cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--set", "hyper.eta_v=1e20"])
    assert status == 3
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("bcd-jax run: BCD diverged at sweep 1: non-finite values in ")
    assert "W_1" in captured.err.split("non-finite values in ")[1].split(";")[0]
    assert f"Wrote that state to {out}/." in captured.err
    assert len(read_jsonl(out / "diagnostics.jsonl")) == 1  # the initial state: the last finite one
    assert (out / "params.npz").is_file() and (out / "loss.png").is_file()
    metrics = read_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["diverged_at"] == 1 and check_folder(out) == []


def test_grid_command_writes_the_table(tmp_path, capsys):
    path = grid_file(tmp_path)
    out = tmp_path / "sw"
    assert cli.main(["grid", str(path), "--out", str(out), "--batch-size", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 members" in printed and "summary.csv" in printed and "hyper.gamma" in printed
    assert len(read_jsonl(out / "summary.jsonl")) == 4 and (out / "curves.png").is_file()
    assert cli.main(["grid", str(path), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["grid", str(path), "--batch-size", "0"])


def test_the_old_sweep_command_and_table_still_work_with_a_note(tmp_path, capsys):
    path = grid_file(tmp_path, '"hyper.gamma" = [0.1, 0.2]\n', table="sweep")
    out = tmp_path / "sw"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "bcd-jax sweep: deprecated; the command is now 'bcd-jax grid'" in err
    assert "the table [sweep] is now called [grid]" in err
    assert len(read_jsonl(out / "summary.jsonl")) == 2


def test_grid_set_changes_the_base_of_every_member(tmp_path, capsys):
    path = grid_file(tmp_path)
    out = tmp_path / "sw"
    assert cli.main(["grid", str(path), "--out", str(out), "--set", "sweeps=2", "--set", "hyper.eta_w=0.1"]) == 0
    rows = read_jsonl(out / "summary.jsonl")
    assert [r["sweeps"] for r in rows] == [2] * 4 and all(r["hyper.eta_w"] == 0.1 for r in rows)
    assert all(len(r["train_loss"]) == 3 for r in rows)
    resolved = read_json(out / "grid.json")["experiment"]
    assert resolved["run"]["sweeps"] == 2 and resolved["hyper"]["eta_w"] == 0.1
    capsys.readouterr()

    for item, message in [
        ("hyper.gamma=0.3", "--set hyper.gamma=0.3: hyper.gamma: is varied in [grid]"),
        ("widht=3", "--set widht=3: widht: unknown key"),
        ("data.n=0", "--set data.n=0: overrides: [data] data.n: expected an int >= 1, got 0"),
    ]:
        assert cli.main(["grid", str(path), "--out", str(tmp_path / "x"), "--set", item]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_grid_file_without_a_grid_table_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(GRID)
    assert cli.main(["grid", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no [grid] table" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_grid_with_a_diverging_member_exits_with_status_3(tmp_path, capsys):
    path = grid_file(tmp_path, '"hyper.eta_v" = [0.2, 1e20]\n')
    out = tmp_path / "sw"
    assert cli.main(["grid", str(path), "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "1 of 2 members diverged (members [1])" in captured.err
    member_1 = captured.out.splitlines()[3].split()  # the table's row of member 1: its status column
    assert member_1[0] == "1" and member_1[-1] == "diverged"
    rows = read_jsonl(out / "summary.jsonl")
    assert [r["diverged"] for r in rows] == [False, True]
    assert [r["first_nonfinite_sweep"] for r in rows] == [None, 1]


def test_grid_of_a_real_data_set_is_scored_on_its_validation_split(tmp_path, capsys, compile_log):
    """Reliability round 2: a grid over digits; every member checked before any member runs; a
    batch size that would hang XLA:CPU is refused as one line."""
    path = tmp_path / "digits_grid.toml"
    path.write_text(
        '[network]\ndepth = 2\nwidth = 8\nbias = true\nloss = "squared_multiclass"\n'
        '[algorithm]\nname = "whole_objective"\nspectral_diagnostics = false\n[run]\nsweeps = 2\n'
        '[data]\ndataset = "digits"\nvalidation_fraction = 0.2\n'
        '[grid]\n"hyper.gamma" = [0.5, 1.0]\n'
    )
    out = tmp_path / "g"
    assert cli.main(["grid", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "val_accuracy" in printed and "best by val_accuracy: member" in printed
    with open(out / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 and {"val_accuracy", "val_loss", "test_accuracy", "test_loss"} <= set(table[0])
    for row in table:
        assert 0 <= float(row["val_accuracy"]) <= 1 and 0 <= float(row["test_accuracy"]) <= 1
        assert row["status"] == "budget" and row["sweeps_completed"] == "2"

    # Member 1 is invalid: refused before any member compiles, and nothing is written.
    bad = tmp_path / "bad_grid.toml"
    bad.write_text(path.read_text().replace("[0.5, 1.0]", "[0.5, -1.0]"))
    before = compile_log.count()
    assert cli.main(["grid", str(bad), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "member 1 {'hyper.gamma': -1.0}" in err and "hyper.gamma: expected" in err
    assert compile_log.count() == before and not (tmp_path / "bad").exists()

    # Batched LAPACK calls on XLA:CPU (jaxlib < 0.11) can deadlock: refused before compiling.
    from bcd_jax.driver.grid import CPU_BATCHED_LAPACK_MAY_HANG

    if jax.default_backend() == "cpu" and CPU_BATCHED_LAPACK_MAY_HANG:
        lapack = tmp_path / "lapack.toml"  # whole_objective's singular value bounding calls an SVD
        lapack.write_text(path.read_text())
        before = compile_log.count("_program")
        assert cli.main(["grid", str(lapack), "--out", str(tmp_path / "b2"), "--batch-size", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "batch_size: 2 members at once on CPU would run batched LAPACK" in err
        assert "use batch_size=1" in err and compile_log.count("_program") == before
        assert "spectral_diagnostics" not in err  # already off: no advice that meets the same error


def test_python_dash_m_help_runs_this_checkout_without_importing_jax():
    """``python -m bcd_jax --help`` (Reliability round 2: no JAX import for the help)."""
    where = subprocess.run(
        [sys.executable, "-c", "import bcd_jax; print(bcd_jax.__file__)"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).parent == REPO / "bcd_jax"  # the subprocesses run this checkout
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *cli_command("--help")[1:]],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: bcd-jax" in done.stdout and all(cmd in done.stdout for cmd in ("run", "grid"))
    assert "bench" not in done.stdout  # removed: python scripts/bench.py
    assert "exit status:" in done.stdout and "3    a run, or a member of a grid, diverged" in done.stdout
    assert "4    the run needs more memory than the machine has" in done.stdout and "130  interrupted" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "bcd_jax.cli" in imported
    assert not {name for name in imported if name.split(".")[0] in ("jax", "jaxlib", "numpy")}


def test_the_help_parser_needs_no_jax_and_run_names_every_kind_of_data(capsys):
    script = "import sys; from bcd_jax import cli; cli.build_parser().format_help(); print('jax' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], env=cli_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "run train on an experiment file's data (teacher problem, bundled set or your file)" in usage


@pytest.mark.parametrize(
    "command, options",
    [
        (
            "run",
            ("--out", "--set", "--resume", "--import", "--overwrite", "--quiet", "--progress", "--checkpoint-every"),
        ),
        ("grid", ("--out", "--set", "--import", "--batch-size", "--overwrite")),
    ],
)
def test_help_lists_the_options_and_exit_statuses(capsys, command, options):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    assert all(opt in usage for opt in options)
    assert "exit status:" in usage and "diverged" in usage and "interrupted" in usage


STUDY_CONFIGS = sorted((REPO / "configs" / "study").glob("*.toml"))


def test_the_study_configs_are_experiment_files_of_their_problem():
    """configs/study/<problem>_<family>.toml: the setting scripts/study.py kept, loadable as is."""
    assert len(STUDY_CONFIGS) >= 20
    for path in STUDY_CONFIGS:
        experiment = load_experiment(path)
        data = experiment.data
        assert experiment.config.algorithm.name in path.stem
        assert "# Measured (python scripts/study.py" in path.read_text()
        if data.dataset != "teacher":
            assert path.stem.startswith(("digits", "deep_mlp", data.dataset))


def test_a_study_config_runs_from_the_command_line(tmp_path):
    path = REPO / "configs" / "study" / "breast_cancer_whole_objective.toml"
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--set", "sweeps=2", "--quiet"]) == 0
    metrics = read_json(out / "metrics.json")
    assert metrics["data"] == "breast_cancer" and metrics["test_accuracy"] > 0.9
