"""Fault injection: start, race, interrupt and kill ``bcd-jax run`` of every family at random moments.

    python scripts/fault_injection.py --events 200            # -> results/fault_injection/report.json
    python scripts/fault_injection.py --events 12 --quick     # a CI-sized smoke run

Every event runs real ``bcd-jax run`` processes on a tiny experiment of one family (chosen in turn)
in one of a few output folders per family, and does one of:

* ``kill``: a run (fresh, ``--overwrite`` or ``--resume``, whatever the folder allows) gets SIGKILL
  at a random moment -- during the imports, the compilation, a sweep or a checkpoint write;
* ``interrupt``: the same with SIGINT (Ctrl-C): the run must exit 130 (or 0 if it had finished),
  with no traceback;
* ``race``: two or three runs start at once on one folder; at most one may hold it;
* ``resume``: the folder's run is resumed to its end, and its weights must equal, bit for bit, a run
  of the same experiment that was never stopped.

After every event the folder must obey the output-folder rule (``bcd_jax.experiments.folder.check_folder``:
every view carries the checkpoint's run id and no later sweep), and at the end every folder's
last checkpoint is resumed and compared bit for bit. Every acquire and release of a folder lock
is traced (``BCD_JAX_LOCK_TRACE``); the trace must show no two processes holding one folder at
once. A persistent compilation cache keeps the events cheap: only a process's imports remain.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = 40


def _experiment(family: str) -> str:
    activation = "relu" if family.startswith("relu") else "leaky_relu"
    bias = "all" if family.startswith("zeng") else "true"
    options = {
        "monotone": "k_v = 3\nk_w = 3",
        "relu_skip": "k_v = 3\nk_w = 3",
        "relu_noskip": "k_v = 3\nk_w = 3",
        "zeng_two_splitting": 'prox_weights = "lipschitz"\n\n[hyper]\nalpha = 1.5',  # one shared alpha diverges
    }
    extra = options.get(family, "")
    return f"""[network]
depth = 3
width = 8
activation = "{activation}"
bias = {bias if bias != "all" else '"all"'}

[algorithm]
name = "{family}"
{extra}

[run]
sweeps = {SWEEPS}
seed = 1

[data]
n = 48
d_in = 10
seed = 0
"""


class Harness:
    def __init__(self, workdir: Path, families: list[str], seed: int):
        self.workdir = workdir
        self.families = families
        self.rng = random.Random(seed)
        self.trace = workdir / "lock_trace.log"
        self.env = dict(os.environ)
        self.env.update(
            {
                "BCD_JAX_LOCK_TRACE": str(self.trace),
                "JAX_COMPILATION_CACHE_DIR": str(workdir / "jax_cache"),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            }
        )
        self.counts: Counter = Counter()
        self.problems: list[str] = []
        self.exit_codes: Counter = Counter()
        self.references: dict[str, dict[str, np.ndarray]] = {}
        self.configs = {}
        for family in families:
            path = workdir / f"{family}.toml"
            path.write_text(_experiment(family))
            self.configs[family] = path
        self.kill_window = 6.0

    # -- processes ---------------------------------------------------------------------------
    def _command(self, family: str, out: Path, mode: str) -> list[str]:
        base = [sys.executable, "-m", "bcd_jax", "run"]
        if mode == "resume":
            return [*base, "--resume", str(out), "--quiet", "--checkpoint-every", "1"]
        args = [*base, str(self.configs[family]), "--out", str(out), "--quiet", "--checkpoint-every", "1"]
        return args + (["--overwrite"] if mode == "overwrite" else [])

    def _start(self, family, out, mode):
        return subprocess.Popen(
            self._command(family, out, mode),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def _finish(self, proc, timeout=300):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.problems.append(f"a run hung for {timeout} s: {' '.join(proc.args)}")
        self.exit_codes[proc.returncode] += 1
        return proc.returncode, err

    def _mode(self, out: Path) -> str:
        """What a user would run on ``out``: resume a run that is not finished, else start afresh."""
        from bcd_jax.experiments.folder import folder_state

        state = folder_state(out)
        if state.checkpoint is None:
            return "fresh"
        if state.checkpoint["status"] in (0, 8) or state.checkpoint["sweep"] < SWEEPS:  # running / interrupted
            return self.rng.choice(["resume", "overwrite"])
        return "overwrite"

    # -- checks ------------------------------------------------------------------------------
    def _check(self, out: Path, event: str) -> None:
        from bcd_jax.experiments.folder import check_folder

        for problem in check_folder(out):
            self.problems.append(f"{event}: {out.name}: {problem}")

    def _reference(self, family: str) -> dict[str, np.ndarray]:
        if family not in self.references:
            out = self.workdir / f"reference_{family}"
            shutil.rmtree(out, ignore_errors=True)
            code, err = self._finish(self._start(family, out, "fresh"))
            if code != 0:
                raise RuntimeError(f"the reference run of {family} failed ({code}): {err[-2000:]}")
            self.references[family] = _params(out)
        return self.references[family]

    def _resume_and_compare(self, family: str, out: Path, event: str) -> None:
        from bcd_jax.experiments.folder import folder_state

        if folder_state(out).checkpoint is None:
            return
        code, err = self._finish(self._start(family, out, "resume"))
        if code != 0:
            self.problems.append(f"{event}: resuming {out.name} exited {code}: {err.strip()[-300:]}")
            return
        got, want = _params(out), self._reference(family)
        for name in want:
            if name.startswith("W_") and not np.array_equal(got[name], want[name]):
                self.problems.append(f"{event}: {out.name}: {name} after resuming differs from the uninterrupted run")
                return
        self.counts["bit-identical resumes"] += 1

    # -- events ------------------------------------------------------------------------------
    def event(self, index: int) -> None:
        family = self.families[index % len(self.families)]
        out = self.workdir / "runs" / f"{family}_{self.rng.randrange(2)}"
        kind = self.rng.choices(["kill", "interrupt", "race", "resume"], weights=[4, 3, 2, 2])[0]
        label = f"event {index} ({kind}, {family})"
        if kind in ("kill", "interrupt"):
            proc = self._start(family, out, self._mode(out))
            time.sleep(self.rng.uniform(0.0, self.kill_window))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL if kind == "kill" else signal.SIGINT)
            code, err = self._finish(proc)
            if kind == "interrupt" and code not in (0, 130, 2, -signal.SIGINT):
                self.problems.append(f"{label}: exit {code} after SIGINT: {err.strip()[-300:]}")
            if "Traceback" in err:
                self.problems.append(f"{label}: a traceback on stderr: {err.strip()[-300:]}")
        elif kind == "race":
            mode = self._mode(out)
            procs = [self._start(family, out, mode) for _ in range(self.rng.choice([2, 3]))]
            results = [self._finish(p) for p in procs]
            winners = sum(code == 0 for code, _ in results)
            for code, err in results:
                if code not in (0, 2) or "Traceback" in err:
                    self.problems.append(f"{label}: a racing run exited {code}: {err.strip()[-300:]}")
            self.counts["race winners"] += winners
        else:
            self._resume_and_compare(family, out, label)
        self.counts[kind] += 1
        self._check(out, label)

    def overlaps(self) -> list[str]:
        """Acquires that found the previous holder still running (from the lock trace): each is two
        processes holding one folder at once. A holder that released removed its record; one that
        was killed left it, and the acquirer checked that it was gone (not running, not a zombie,
        its pid not reused) at the instant it got the lock."""
        if not self.trace.exists():
            return []
        bad = []
        for line in self.trace.read_text().splitlines():
            stamp, pid, what, before, folder = line.split(" ", 4)
            if what == "acquire" and before.endswith(":running"):
                bad.append(f"{folder}: pid {pid} acquired at {stamp} while pid {before.split(':')[0]} held it")
        return bad


def _params(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "params.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", nargs="*", default=None, help="registry names (default: every family)")
    parser.add_argument("--out", type=Path, default=Path("results") / "fault_injection")
    parser.add_argument("--quick", action="store_true", help="a shorter kill window (CI-sized)")
    args = parser.parse_args(argv)
    import bcd_jax

    families = args.families or sorted(bcd_jax.ALGORITHMS)
    workdir = args.out
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "runs").mkdir(parents=True)
    harness = Harness(workdir.resolve(), families, args.seed)
    if args.quick:
        harness.kill_window = 3.0
    t0 = time.perf_counter()
    for family in families:
        harness._reference(family)  # also fills the compilation cache
    for i in range(args.events):
        harness.event(i)
    folders = sorted((workdir / "runs").iterdir())
    for out in folders:
        family = out.name.rsplit("_", 1)[0]
        harness._resume_and_compare(family, out, f"final check of {out.name}")
        harness._check(out, f"final check of {out.name}")
    overlaps = harness.overlaps()
    report = {
        "events": args.events,
        "kinds": {k: v for k, v in harness.counts.items() if k in ("kill", "interrupt", "race", "resume")},
        "bit_identical_resumes": harness.counts["bit-identical resumes"],
        "race_winners": harness.counts["race winners"],
        "exit_codes": {str(k): v for k, v in sorted(harness.exit_codes.items(), key=lambda kv: str(kv[0]))},
        "lock_acquisitions": sum(1 for line in harness.trace.read_text().splitlines() if " acquire " in line)
        if harness.trace.exists()
        else 0,
        "inconsistent_folders": [p for p in harness.problems if "check" in p or ": " in p],
        "double_holders": overlaps,
        "families": families,
        "seconds": time.perf_counter() - t0,
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("inconsistent_folders", "double_holders")}))
    print(f"problems: {len(harness.problems)}, double holders: {len(overlaps)}")
    for line in (harness.problems + overlaps)[:20]:
        print("  " + line)
    return 0 if not harness.problems and not overlaps else 1


if __name__ == "__main__":
    raise SystemExit(main())
