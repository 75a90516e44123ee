"""The documentation runs as written and says what the code says.

* Every Python block of README.md and docs/**/*.md runs, each on its own, in a fresh namespace
  and a temporary working directory, so every block must be self-contained (its own imports,
  data, key and config). A block must not diverge: ``BCDDivergenceWarning`` is an error here.
  ``docs/examples`` is on the path (the example family), and whatever a block registers is
  unregistered after it.
* The site builds: ``mkdocs build --strict`` (the API reference is generated from the docstrings,
  so a docstring griffe cannot read fails here, as CI runs it).
* The example family of ``docs/examples/my_family.py`` trains through ``fit``, a grid and the
  command line (``--import``), and resumes.
* The pages that restate the code are checked against it: the layer table of
  docs/architecture.md against every module's imports, the field tables of
  docs/configuration.md against the dataclasses, the protocol listing against the example file,
  and no page uses a 0.2 name.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bcd_jax

pytestmark = pytest.mark.filterwarnings("error::bcd_jax.BCDDivergenceWarning")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
GUIDE = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]  # hand-written (docs/reference/ is generated)
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks():
    out = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # first line of code inside the fence
            out.append(pytest.param(_name(page), line, match.group(1), id=f"{_name(page)}:{line}"))
    return out


BLOCKS = _blocks()


@pytest.fixture
def registries_restored():
    """Leaves the registries (and the example module) as they were: a block may register entries."""
    from bcd_jax.activations import ACTIVATIONS
    from bcd_jax.algorithms import ALGORITHMS
    from bcd_jax.algorithms.base import REGISTERED_CLASSES
    from bcd_jax.losses import LOSSES

    registries = (ALGORITHMS, ACTIVATIONS, LOSSES)
    before = [set(r) for r in registries]
    classes = list(REGISTERED_CLASSES)
    try:
        yield
    finally:
        for registry, names in zip(registries, before):
            for name in set(registry) - names:
                registry.unregister(name)
        REGISTERED_CLASSES[:] = classes
        sys.modules.pop("my_family", None)


def test_every_page_has_a_title_and_the_readme_has_examples():
    for page in PAGES:
        assert page.read_text().startswith("# "), page
    assert sum(1 for p in BLOCKS if p.values[0] == "README.md") >= 1


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS)
def test_block_runs(page, line, code, tmp_path, monkeypatch, registries_restored):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the example family: `import my_family`
    namespace = {"__name__": "__main__"}
    # Pad with blank lines so that a traceback points at the page's own line numbers.
    exec(compile("\n" * (line - 1) + code, str(ROOT / page), "exec"), namespace)  # noqa: S102 - the point of the test


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_links_stay_inside_the_repository(page):
    """Every Markdown link is relative, resolves inside the repository and names a file that exists."""
    text = page.read_text()
    assert "../shared" not in text and "/work/" not in text, f"{page.name} points outside the repository"
    for target in LINK.findall(text):
        path, _, anchor = target.partition("#")
        assert "://" not in target and not target.startswith(("/", "mailto:")), f"{page.name}: {target}"
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} points outside the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: {target}: no such heading"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)  # no '#' comments of code
    titles = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}


# -- the site ------------------------------------------------------------------------------------


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: every page, link and anchor resolves and every docstring of the
    reference parses without a warning (the docs extra: ``pip install -e '.[docs]'``)."""
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'; the test extra has it)")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about its successor
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    proc = subprocess.run(
        [*command, "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (tmp_path / "site" / "reference" / "fit" / "index.html").read_text()
    assert "Trains the network" in html  # the reference holds the docstrings


# -- the example family --------------------------------------------------------------------------

EXPERIMENT = """
[network]
depth = 3
width = 8

[algorithm]
name = "layerwise_gd"
k = 2

[hyper]
eta = 0.4

[run]
sweeps = 3

[data]
n = 48
d_in = 12
teacher_width = 4
"""


def _cli(args, cwd):
    """``bcd-jax ARGS --import my_family`` in a fresh process that has docs/examples on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(EXAMPLES)])
    return subprocess.run(
        [sys.executable, "-m", "bcd_jax", *args, "--import", "my_family"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_example_family_trains_through_fit_grid_and_cli(tmp_path, monkeypatch, capsys, registries_restored):
    from bcd_jax.cli import main
    from bcd_jax.experiments import experiment_data, load_experiment
    from bcd_jax.experiments.folder import check_folder

    monkeypatch.syspath_prepend(str(EXAMPLES))
    import my_family

    (tmp_path / "exp.toml").write_text(EXPERIMENT)
    experiment = load_experiment(tmp_path / "exp.toml")
    assert isinstance(experiment.config.algorithm, my_family.LayerwiseGD) and experiment.config.algorithm.k == 2
    split = experiment_data(experiment)
    X, Y = split.X_train, split.y_train

    # fit: every sweep descends the training loss here, and the extras are recorded
    config = experiment.config.replace(sweeps=5)
    result = bcd_jax.fit(X, Y, config, progress=None)
    assert result.status == bcd_jax.Status.BUDGET and result.config.algorithm.name == "layerwise_gd"
    assert result.history.extras.grad_norms.shape == (6, 3) and np.isnan(result.history.extras.grad_norms[0]).all()
    assert np.all(np.diff(result.history.train_loss) < 0)

    # a grid: one compiled program, member i = fit with seed i and eta i
    grid = bcd_jax.run_grid(X, Y, config, my_family.LayerwiseHyper(eta=np.array([0.4, 0.2])), seeds=[0, 1])
    np.testing.assert_allclose(grid.final("train_loss")[0], result.train_loss, rtol=1e-5)

    # the command line with --import, then resumed to 5 sweeps: the same weights as fit's 5 sweeps
    out = tmp_path / "out"
    proc = _cli(["run", "exp.toml", "--out", "out", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = json.loads((out / "metrics.json").read_text())
    assert (first["algorithm"], first["status"], first["sweeps_completed"]) == ("layerwise_gd", "budget", 3)

    bcd_jax.ALGORITHMS.unregister("layerwise_gd")  # as in a process that did not import my_family
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--resume", "out", "--set", "sweeps=5", "--quiet"]) == 2
    assert "--import my_family" in capsys.readouterr().err  # the refusal names the module to import

    proc = _cli(["run", "--resume", "out", "--set", "sweeps=5", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["run_id"] == first["run_id"] and resumed["sweeps_completed"] == 5
    assert check_folder(out) == []
    with np.load(out / "params.npz") as saved:
        for j, w in enumerate(result.params, start=1):
            np.testing.assert_array_equal(saved[f"W_{j}"], np.asarray(w))  # bit-identical to one straight run


# -- pages that restate the code -----------------------------------------------------------------


def _module_imports() -> dict[str, set[str]]:
    """Every bcd_jax module -> the bcd_jax modules it imports (function-level imports and the
    packages a dotted import loads included)."""
    modules = {}
    for path in (ROOT / "bcd_jax").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    found = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bcd_jax":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "bcd_jax")
        loaded = set()
        for target in targets:
            pieces = target.split(".")
            loaded.update(".".join(pieces[:k]) for k in range(2, len(pieces) + 1))  # parents run first
        found[name] = loaded - {name}
    return found


def test_architecture_layers_match_the_imports():
    """docs/architecture.md's layer table names every module once, and no module imports one above it."""
    text = (DOCS / "architecture.md").read_text()
    layer_of = {}
    for number, modules in re.findall(r"^\| (\d+)\. [^|]+\| ([^|]+) \|", text, flags=re.MULTILINE):
        for module in re.findall(r"`([\w.]+)`", modules):
            assert f"bcd_jax.{module}" not in layer_of, f"{module} is listed twice"
            layer_of[f"bcd_jax.{module}"] = int(number)
    imports = _module_imports()
    modules = set(imports) - {"bcd_jax"}  # the package itself only re-exports, lazily
    assert set(layer_of) == modules, (
        f"missing: {sorted(modules - set(layer_of))}; stale: {sorted(set(layer_of) - modules)}"
    )
    upward = [
        f"{name} (layer {layer_of[name]}) imports {target} (layer {layer_of[target]})"
        for name in sorted(modules)
        for target in sorted(imports[name] - {"bcd_jax"})
        if layer_of[target] > layer_of[name]
    ]
    assert not upward, upward


def _table_fields(text: str, marker: str) -> list[str]:
    """The first-column names of the first table after ``marker``."""
    start = text.index(marker)
    lines = text[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[first + 2 :]:  # past the header and the rule
        if not line.startswith("|"):
            break
        rows.append(re.match(r"\| `([\w.]+)`", line).group(1))
    return rows


def test_configuration_page_lists_every_field():
    from bcd_jax.experiments import DataSpec

    text = (DOCS / "configuration.md").read_text()
    tables = {
        "## `bcd_jax.Network`": bcd_jax.Network,
        "## `bcd_jax.Config`": bcd_jax.Config,
        "## `bcd_jax.Stop`": bcd_jax.Stop,
        "### `bcd_jax.Akiyama`": bcd_jax.Akiyama,
        "`bcd_jax.AkiyamaHyper` (": bcd_jax.AkiyamaHyper,
        "### `bcd_jax.WholeObjective`": bcd_jax.WholeObjective,
        "`bcd_jax.WholeObjectiveHyper`:": bcd_jax.WholeObjectiveHyper,
        "### `bcd_jax.Zeng`": bcd_jax.Zeng,
        "`bcd_jax.ZengHyper` (": bcd_jax.ZengHyper,
        "### `bcd_jax.algorithms.AnnealedThreeSplitting`": bcd_jax.algorithms.AnnealedThreeSplitting,
        "`bcd_jax.algorithms.AnnealedHyper` (": bcd_jax.algorithms.AnnealedHyper,
        "### `[data]`": DataSpec,
    }
    for marker, cls in tables.items():
        fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls._fields)
        assert _table_fields(text, marker) == fields, cls.__name__
    toml_tables = re.findall(r"^\| `\[(\w+)\]` \|", text, flags=re.MULTILINE)
    assert toml_tables == ["network", "algorithm", "hyper", "run", "stop", "data", "experiment", "grid"]


def test_protocol_listing_is_the_example_file():
    """The listing of the example family in docs/architecture.md is a verbatim part of the file."""
    text = (DOCS / "architecture.md").read_text()
    listing = re.search(r"^```py\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE).group(1)
    assert listing in (EXAMPLES / "my_family.py").read_text()


OLD_NAMES = [
    r"\bDiagnostics\b",
    r"bcd_jax\.diagnostics\b",
    r"\bAkiyamaBlocks\b",
    r"\bblock_arrays\b",
    r"`info\(",
    r"\brun_sweep\b",
    r"\bSweepSpec\b",
    r"\bload_sweep\b",
    r"\bBatchRun\b",
    r"\brun_batch\b",
    r"bcd-jax (sweep|bench)\b",
    r"FitResult\.movement|result\.movement",
    r"\bsweep\.json\b",
    r"\btrain_mse\.png\b",
    r"akiyama_theory",
    r"bcd_jax\.flops\b",
    r"bcd_jax\.timing\b",
    r"tests/reference",
    r"cli-and-sweeps",
    r"dumps_experiment",
    r"track_validation",
    r"val_curve",
    r"leaky_relu_prox",
    r"check_hyper|resolve_network",
]


@pytest.mark.parametrize("page", GUIDE, ids=_name)
def test_no_0_2_names(page):
    text = page.read_text()
    found = [pattern for pattern in OLD_NAMES if re.search(pattern, text)]
    assert not found, f"{_name(page)} still uses 0.2 names: {found}"
    code = "\n".join(re.findall(r"^```\w*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE))
    assert not re.search(r"^\[sweep", code, flags=re.MULTILINE), f"{_name(page)}: a [sweep] table (now [grid])"
