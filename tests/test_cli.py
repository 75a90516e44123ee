"""The ``bcd-jax`` command line, called in-process (``bcd_jax.cli.main``) on a tiny experiment file."""

from __future__ import annotations

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
from bcd_jax.config import config_from_dict
from bcd_jax.datasets import load_dataset
from bcd_jax.experiments import (
    DataSpec,
    dumps_experiment,
    experiment_data,
    load_experiment,
    plot_experiment,
    run_experiment,
    summarize,
)

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
SWEEP = TINY.split("[experiment]")[0].replace("sweeps = 4", "sweeps = 3")


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def sweep_file(tmp_path, grid='"hyper.gamma" = [0.1, 0.2]\nseed = [0, 1]\n'):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP + "[sweep]\n" + grid)
    return path


def _no_nan(name):
    raise ValueError(f"non-standard JSON constant {name}")


def read_jsonl(path):
    """Strict JSON lines (NaN / Infinity are errors)."""
    return [json.loads(line, parse_constant=_no_nan) for line in path.read_text().splitlines()]


def test_experiment_file_runs_the_comparisons_from_the_same_weights(tiny, tmp_path):
    config, data, experiment = load_experiment(tiny)
    assert data == DataSpec(n=16, d_in=24, teacher_width=4) and experiment.compare == ("relu_noskip",)
    results = run_experiment(config.replace(sweeps=2), data, experiment, progress=None)
    assert list(results) == ["monotone", "relu_noskip"]
    assert results["relu_noskip"].config.algorithm.name == "relu_noskip"
    assert results["relu_noskip"].config.algorithm.k_v == 3  # the structure it shares is kept
    # Same data and initial weights, on the same (plain) network: the same initial error.
    assert results["relu_noskip"].history.train_mse[0] == results["monotone"].history.train_mse[0]
    summary = summarize(results["monotone"])
    assert summary["algorithm"] == "monotone" and summary["sweeps_completed"] == 2
    assert len(summary["final_layer_losses"]) == 2
    plot_experiment(results, tmp_path / "fig" / "f.png", title="tiny")
    assert (tmp_path / "fig" / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "extra, message",
    [
        ('[experiment]\ncompare = ["nope"]\n', r"\[experiment\] algorithm: unknown name 'nope'"),
        ("[data]\nsize = 3\n", r"unknown key\(s\) \['size'\] in \[data\]"),
        ("[data]\nn = 0\n", r"\[data\] data.n: expected an int >= 1, got 0"),
    ],
)
def test_bad_experiment_files_name_the_table(tmp_path, extra, message):
    path = tmp_path / "bad.toml"
    path.write_text(extra)
    with pytest.raises(ValueError, match=message):
        load_experiment(path)


def test_run_writes_one_output_folder(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(tiny), "--out", str(out), "--set", "hyper.gamma=0.3", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    files = ["checkpoint", "config.json", "diagnostics.jsonl", "loss.png", "metrics.json", "params.npz"]
    assert sorted(p.name for p in out.iterdir()) == files

    saved = json.loads((out / "config.json").read_text())
    assert saved["hyper"]["gamma"] == 0.3 and saved["run"]["sweeps"] == 4 and saved["data"]["n"] == 16
    config = config_from_dict({k: v for k, v in saved.items() if k != "data"})
    assert config.to_dict() == {k: v for k, v in saved.items() if k != "data"}
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=16, d_in=24, teacher_width=4)
    expected = bcd_jax.fit(X, Y, config, key=jax.random.key(config.seed), progress=None)

    lines = read_jsonl(out / "diagnostics.jsonl")
    assert [line["sweep"] for line in lines] == [0, 1, 2, 3, 4]
    assert set(lines[0]) == {"sweep", "movement", *bcd_jax.Diagnostics._fields}
    for name in bcd_jax.Diagnostics._fields:
        written = np.array([line[name] for line in lines], dtype=float)  # null -> NaN
        np.testing.assert_array_equal(written, getattr(expected.history, name), err_msg=name)
    np.testing.assert_array_equal(np.array([line["movement"] for line in lines], dtype=float), expected.movement)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_mse"] == pytest.approx(float(expected.history.train_mse[-1]))
    assert metrics["sweeps_completed"] == 4 and "test_mse" not in metrics  # no held-out teacher samples
    with np.load(out / "params.npz") as params:
        assert sorted(params.files) == ["W_1", "W_2", "W_3"]
        for j, w in enumerate(expected.params, start=1):
            np.testing.assert_array_equal(params[f"W_{j}"], w)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_on_a_bundled_data_set_writes_its_test_metrics(tmp_path, capsys):
    """An experiment file can name a real data set; the run is validated on its test split."""
    path = tmp_path / "cancer.toml"
    path.write_text(
        '[network]\ndepth = 2\nwidth = 8\nloss = "logistic"\nbias = true\n'
        '[algorithm]\nname = "whole_objective"\n[run]\nsweeps = 3\n'
        '[data]\ndataset = "breast_cancer"\ntest_fraction = 0.3\nseed = 2\n'
    )
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "breast_cancer n=398, 171 test" in printed and "test_accuracy" in printed
    data = load_dataset("breast_cancer", test_fraction=0.3, seed=2)
    config = config_from_dict({k: v for k, v in json.loads((out / "config.json").read_text()).items() if k != "data"})
    expected = bcd_jax.fit(
        data.X_train, data.y_train, config, key=jax.random.key(0), validation=(data.X_test, data.y_test), progress=None
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "breast_cancer" and metrics["sweeps_completed"] == 3
    assert metrics["test_accuracy"] == pytest.approx(float(expected.history.val_accuracy[-1]))
    assert metrics["train_accuracy"] == pytest.approx(float(expected.history.train_accuracy[-1]))
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


@pytest.mark.parametrize(
    "table, message",
    [
        (
            'dataset = "mnist"',
            r"data.dataset: expected one of \('teacher', 'breast_cancer', 'diabetes', 'digits'\), got 'mnist'",
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
def test_dumps_experiment_reads_back_as_the_same_experiment(tmp_path, config, data):
    path = tmp_path / "run.toml"
    path.write_text(dumps_experiment(config, data, header="measured: 97%\nsecond line"))
    assert path.read_text().startswith("# measured: 97%\n# second line\n")
    loaded, loaded_data, _ = load_experiment(path)
    assert loaded == config and loaded.hyper == config.hyper and loaded_data == data


def test_teacher_test_samples_come_from_the_same_teacher():
    config = bcd_jax.Config(network=bcd_jax.Network(depth=2, width=3))
    split = experiment_data(config, DataSpec(n=10, d_in=12, teacher_width=3, n_test=5, seed=3))
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
    assert "--out:" in err and "exists and is not empty" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "params.npz").is_file()
    # A second --overwrite starts afresh (the old checkpoint is not mistaken for a resume).
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--overwrite", "--set", "hyper.gamma=0.1"]) == 0
    assert json.loads((out / "config.json").read_text())["hyper"]["gamma"] == 0.1


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
    assert cli.parse_overrides(items) == {
        "sweeps": 50,
        "hyper.gamma": 0.3,
        "algorithm.svb": [0.5, 1.5],
        "algorithm.inner": "exact",
        "algorithm.name": "relu_skip",
        "data.n": 200,
    }
    config, data = cli.apply_overrides(
        bcd_jax.Config(),
        DataSpec(),
        {"sweeps": 50, "algorithm.svb": [0.5, 1.5], "data.n": 200, "network.width": 8, "seed": 3, "hyper.gamma": 0.3},
    )
    assert config.sweeps == 50 and config.algorithm.svb == (0.5, 1.5) and data.n == 200
    assert config.network.width == 8 and config.seed == 3 and config.hyper.gamma == 0.3
    config, _ = cli.apply_overrides(bcd_jax.Config(), DataSpec(), {"algorithm.name": "relu_skip", "algorithm.k_v": 7})
    assert config.algorithm.name == "relu_skip" and config.algorithm.k_v == 7


@pytest.mark.parametrize(
    "item, message",
    [
        ("widht=3", "--set: unknown key 'widht'; expected 'sweeps', 'seed', 'network.<field>'"),
        ("network.widht=3", "--set: unknown key 'network.widht'; [network] has the fields"),
        ("gamma=0.3", "(did you mean 'hyper.gamma'?)"),
        ("width=3", "(did you mean 'network.width'?)"),
        ("data.size=3", "--set: unknown key 'data.size'"),
        ("sweeps", "--set: expected key=value, got 'sweeps'"),
        ("hyper.gamma=-1", "--set hyper.gamma=-1: hyper.gamma: expected a number in (0, inf"),
        ("sweeps=2.5", "--set sweeps=2.5: sweeps: expected an int, got float 2.5"),
        ("data.n=0", "--set data.n=0: data.n: expected an int >= 1, got 0"),
        ("algorithm.name=nope", "--set algorithm.name='nope': algorithm: unknown name 'nope'"),
    ],
)
def test_bad_set_is_a_clear_error(tiny, tmp_path, capsys, item, message):
    assert cli.main(["run", str(tiny), "--out", str(tmp_path / "x"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_checkpoint_every_and_resume_continue_the_run(tiny, tmp_path, capsys):
    first, whole = tmp_path / "first", tmp_path / "whole"
    assert cli.main(["run", str(tiny), "--out", str(first), "--quiet", "--checkpoint-every", "2"]) == 0
    assert (first / "checkpoint" / "checkpoint.npz").is_file()
    six = ["--quiet", "--checkpoint-every", "2", "--set", "sweeps=6"]
    assert cli.main(["run", str(tiny), "--resume", str(first), *six]) == 0
    assert cli.main(["run", str(tiny), "--out", str(whole), *six]) == 0
    resumed, straight = read_jsonl(first / "diagnostics.jsonl"), read_jsonl(whole / "diagnostics.jsonl")
    assert len(resumed) == 7 and resumed == straight
    with np.load(first / "params.npz") as a, np.load(whole / "params.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    assert json.loads((first / "config.json").read_text())["run"]["sweeps"] == 6

    assert cli.main(["run", str(tiny), "--resume", str(tmp_path / "none"), "--quiet"]) == 2
    assert "--resume: no checkpoint at" in capsys.readouterr().err
    assert cli.main(["run", str(tiny), "--resume", str(first), "--set", "network.width=5", "--quiet"]) == 2
    assert "network.width" in capsys.readouterr().err


def test_run_that_diverges_exits_with_status_3(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the divergence is reported as one line, not as a warning
        status = cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--set", "hyper.eta_v=1e20"])
    assert status == 3
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("bcd-jax run: BCD diverged at sweep 1: non-finite values in W_1")
    assert f"Wrote that state to {out}/." in captured.err
    assert len(read_jsonl(out / "diagnostics.jsonl")) == 1  # the initial state: the last finite one
    assert (out / "params.npz").is_file() and (out / "loss.png").is_file()


def test_sweep_command_writes_the_table(tmp_path, capsys):
    path = sweep_file(tmp_path)
    out = tmp_path / "sw"
    assert cli.main(["sweep", str(path), "--out", str(out), "--batch-size", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 members" in printed and "summary.csv" in printed and "hyper.gamma" in printed
    assert len(read_jsonl(out / "summary.jsonl")) == 4 and (out / "train_mse.png").is_file()
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", str(path), "--batch-size", "0"])


def test_sweep_set_changes_the_base_of_every_member(tmp_path, capsys):
    path = sweep_file(tmp_path)
    out = tmp_path / "sw"
    assert cli.main(["sweep", str(path), "--out", str(out), "--set", "sweeps=2", "--set", "hyper.eta_w=0.1"]) == 0
    rows = read_jsonl(out / "summary.jsonl")
    assert [r["sweeps"] for r in rows] == [2] * 4 and all(r["hyper.eta_w"] == 0.1 for r in rows)
    assert all(len(r["train_mse"]) == 3 for r in rows)
    resolved = json.loads((out / "sweep.json").read_text())
    assert resolved["config"]["run"]["sweeps"] == 2 and resolved["config"]["hyper"]["eta_w"] == 0.1
    capsys.readouterr()

    for item, message in [
        ("hyper.gamma=0.3", "--set hyper.gamma: is swept in [sweep]"),
        ("widht=3", "--set: unknown key 'widht'"),
        ("data.n=0", "--set data.n=0: data.n: expected an int >= 1, got 0"),
    ]:
        assert cli.main(["sweep", str(path), "--out", str(tmp_path / "x"), "--set", item]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_sweep_file_without_a_sweep_table_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no [sweep] table" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_sweep_with_a_diverging_member_exits_with_status_3(tmp_path, capsys):
    path = sweep_file(tmp_path, '"hyper.eta_v" = [0.2, 1e20]\n')
    out = tmp_path / "sw"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "1 of 2 members diverged (members [1])" in captured.err and "at sweep 1" in captured.out
    rows = read_jsonl(out / "summary.jsonl")
    assert [r["diverged"] for r in rows] == [False, True]


def test_bench_runs_the_script(tmp_path, monkeypatch, capsys):
    with_main = tmp_path / "with_main.py"
    with_main.write_text(
        "from __future__ import annotations\nimport dataclasses\n\n\n@dataclasses.dataclass(frozen=True)\n"
        "class Settings:\n    quick: bool = False\n\n\n"
        "def main(argv):\n    print('main got', argv, Settings())\n    return 3\n"
    )
    monkeypatch.setattr(cli, "bench_script", lambda: with_main)
    assert cli.main(["bench", "--quick", "x"]) == 3
    assert "main got ['--quick', 'x'] Settings(quick=False)" in capsys.readouterr().out

    plain = tmp_path / "plain.py"
    plain.write_text("import sys\nif __name__ == '__main__':\n    print('argv', sys.argv[1:])\n")
    monkeypatch.setattr(cli, "bench_script", lambda: plain)
    assert cli.main(["bench", "--help"]) == 0
    assert "argv ['--help']" in capsys.readouterr().out

    monkeypatch.setattr(cli, "bench_script", lambda: None)
    assert cli.main(["bench"]) == 2
    assert "scripts/bench.py not found" in capsys.readouterr().err


def test_bench_script_is_never_taken_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "bench.py").write_text("raise SystemExit('not this one')\n")
    monkeypatch.chdir(tmp_path)
    checkout = Path(cli.__file__).resolve().parents[1] / "scripts" / "bench.py"
    assert cli.bench_script() == (checkout if checkout.is_file() else None)


@pytest.mark.skipif(cli.bench_script() is None, reason="no scripts/bench.py in this checkout")
def test_bench_help_reaches_the_repository_script(capsys):
    assert cli.main(["bench", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


def test_python_dash_m_help():
    done = subprocess.run(
        [sys.executable, "-m", "bcd_jax", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage: bcd-jax" in done.stdout and all(cmd in done.stdout for cmd in ("run", "sweep", "bench"))
    assert "exit status:" in done.stdout and "3  a run, or a member of a sweep, diverged" in done.stdout


@pytest.mark.parametrize(
    "command, options",
    [
        ("run", ("--out", "--set", "--resume", "--overwrite", "--quiet", "--progress", "--checkpoint-every")),
        ("sweep", ("--out", "--set", "--batch-size", "--overwrite")),
    ],
)
def test_help_lists_the_options_and_exit_statuses(capsys, command, options):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    assert all(opt in usage for opt in options)
    assert "exit status:" in usage and "diverged" in usage


STUDY_CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "study").glob("*.toml"))


def test_the_study_configs_are_experiment_files_of_their_problem():
    """configs/study/<problem>_<family>.toml: the setting scripts/study.py kept, loadable as is."""
    assert len(STUDY_CONFIGS) >= 20
    for path in STUDY_CONFIGS:
        config, data, _ = load_experiment(path)
        assert config.algorithm.name in path.stem
        assert "# Measured (python scripts/study.py" in path.read_text()
        if data.dataset != "teacher":
            assert path.stem.startswith(("digits", "deep_mlp", data.dataset))


def test_a_study_config_runs_from_the_command_line(tmp_path):
    path = Path(__file__).parent.parent / "configs" / "study" / "breast_cancer_whole_objective.toml"
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--set", "sweeps=2", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "breast_cancer" and metrics["test_accuracy"] > 0.9
