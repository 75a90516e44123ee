"""The ``bcd-jax`` command line, called in-process (``bcd_jax.cli.main``) on a tiny experiment file."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import bcd_jax
from bcd_jax import cli

TINY = """
depth = 3
width = 4
k_v = 3
k_w = 3
sweeps = 4
eta_v = 0.2
eta_w = 0.2
eta_w1 = 0.2
[data]
n = 16
d_in = 24
teacher_width = 4
[experiment]
compare = ["relu_noskip"]
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _no_nan(name):
    raise ValueError(f"non-standard JSON constant {name}")


def read_jsonl(path):
    """Strict JSON lines (NaN / Infinity are errors)."""
    return [json.loads(line, parse_constant=_no_nan) for line in path.read_text().splitlines()]


def test_run_writes_one_output_folder(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(tiny), "--out", str(out), "--set", "gamma=0.3", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    files = ["checkpoint", "config.json", "diagnostics.jsonl", "loss.png", "params.npz"]
    assert sorted(p.name for p in out.iterdir()) == files

    saved = json.loads((out / "config.json").read_text())
    assert saved["gamma"] == 0.3 and saved["sweeps"] == 4 and saved["data"]["n"] == 16
    config = bcd_jax.Config(**{k: v for k, v in saved.items() if k != "data"})
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=16, d_in=24, teacher_width=4)
    expected = bcd_jax.fit(X, Y, config, key=jax.random.key(config.seed), quiet=True)

    lines = read_jsonl(out / "diagnostics.jsonl")
    assert [line["sweep"] for line in lines] == [0, 1, 2, 3, 4]
    assert set(lines[0]) == {"sweep", *bcd_jax.Diagnostics._fields}
    for name in bcd_jax.Diagnostics._fields:
        written = np.array([line[name] for line in lines], dtype=float)  # null -> NaN
        np.testing.assert_array_equal(written, getattr(expected.history, name), err_msg=name)
    with np.load(out / "params.npz") as params:
        assert sorted(params.files) == ["W_1", "W_2", "W_3"]
        for j, w in enumerate(expected.params, start=1):
            np.testing.assert_array_equal(params[f"W_{j}"], w)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet", "--overwrite", "--set", "gamma=0.1"]) == 0
    assert json.loads((out / "config.json").read_text())["gamma"] == 0.1


def test_default_output_folder_is_results_config_stem(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(tiny), "--quiet"]) == 0
    assert (tmp_path / "results" / "tiny" / "diagnostics.jsonl").is_file()


def test_set_values_follow_toml():
    assert cli.parse_overrides(["sweeps=50", "gamma=0.3", "svb=[0.5,1.5]", "inner=exact", 'algorithm="relu_skip"',
                                "data.n = 200"]) == {
        "sweeps": 50, "gamma": 0.3, "svb": [0.5, 1.5], "inner": "exact", "algorithm": "relu_skip", "data.n": 200}
    config, data = cli.apply_overrides(bcd_jax.Config(), bcd_jax.experiments.DataSpec(),
                                       {"sweeps": 50, "svb": [0.5, 1.5], "data.n": 200})
    assert config.sweeps == 50 and config.svb == (0.5, 1.5) and data.n == 200


@pytest.mark.parametrize(
    "item, message",
    [
        ("widht=3", "--set: unknown key 'widht'; expected a Config field"),
        ("data.size=3", "--set: unknown key 'data.size'"),
        ("sweeps", "--set: expected key=value, got 'sweeps'"),
        ("gamma=-1", "--set gamma=-1: gamma: expected a finite number > 0, got -1"),
        ("sweeps=2.5", "--set sweeps=2.5: sweeps: expected an int, got float 2.5"),
        ("data.n=0", "--set data.n=0: data.n: expected an int >= 1, got 0"),
    ],
)
def test_bad_set_is_a_clear_error(tiny, tmp_path, capsys, item, message):
    assert cli.main(["run", str(tiny), "--out", str(tmp_path / "x"), "--set", item]) == 2
    assert message in capsys.readouterr().err
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
    assert json.loads((first / "config.json").read_text())["sweeps"] == 6

    assert cli.main(["run", str(tiny), "--resume", str(tmp_path / "none"), "--quiet"]) == 2
    assert "--resume: no checkpoint at" in capsys.readouterr().err
    assert cli.main(["run", str(tiny), "--resume", str(first), "--set", "width=5", "--quiet"]) == 2
    assert "width" in capsys.readouterr().err


def test_sweep_command_writes_the_table(tmp_path, capsys):
    sweep_file = TINY.split("[experiment]")[0].replace("sweeps = 4", "sweeps = 3")
    (tmp_path / "s.toml").write_text(sweep_file + "[sweep]\ngamma = [0.1, 0.2]\nseed = [0, 1]\n")
    out = tmp_path / "sw"
    assert cli.main(["sweep", str(tmp_path / "s.toml"), "--out", str(out), "--batch-size", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 members" in printed and "summary.csv" in printed
    assert len(read_jsonl(out / "summary.jsonl")) == 4 and (out / "train_mse.png").is_file()
    assert cli.main(["sweep", str(tmp_path / "s.toml"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", str(tmp_path / "s.toml"), "--batch-size", "0"])


def test_bench_runs_the_script(tmp_path, monkeypatch, capsys):
    with_main = tmp_path / "with_main.py"
    with_main.write_text(
        "from __future__ import annotations\nimport dataclasses\n\n\n@dataclasses.dataclass(frozen=True)\n"
        "class Settings:\n    quick: bool = False\n\n\n"
        "def main(argv):\n    print('main got', argv, Settings())\n    return 3\n"
    )
    monkeypatch.setattr(cli, "_bench_script", lambda: with_main)
    assert cli.main(["bench", "--quick", "x"]) == 3
    assert "main got ['--quick', 'x'] Settings(quick=False)" in capsys.readouterr().out

    plain = tmp_path / "plain.py"
    plain.write_text("import sys\nif __name__ == '__main__':\n    print('argv', sys.argv[1:])\n")
    monkeypatch.setattr(cli, "_bench_script", lambda: plain)
    assert cli.main(["bench", "--help"]) == 0
    assert "argv ['--help']" in capsys.readouterr().out

    monkeypatch.setattr(cli, "_bench_script", lambda: None)
    assert cli.main(["bench"]) == 2
    assert "scripts/bench.py not found" in capsys.readouterr().err


@pytest.mark.skipif(cli._bench_script() is None, reason="no scripts/bench.py in this checkout")
def test_bench_help_reaches_the_repository_script(capsys):
    assert cli.main(["bench", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


def test_python_dash_m_help():
    done = subprocess.run([sys.executable, "-m", "bcd_jax", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: bcd-jax" in done.stdout and all(cmd in done.stdout for cmd in ("run", "sweep", "bench"))


def test_run_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    assert all(opt in usage for opt in ("--out", "--set", "--resume", "--overwrite", "--quiet", "--checkpoint-every"))
