"""Every Python block of the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# A README example must not diverge.
pytestmark = pytest.mark.filterwarnings("error::bcd_jax.BCDDivergenceWarning")

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    code = BLOCKS[index]
    if "bcd_jax.datasets" in code:
        pytest.importorskip("sklearn")  # the optional 'datasets' extra
    namespace: dict = {}
    if "bcd_jax.fit(X, Y, config, key=key," in code:  # the "Long runs" block reuses earlier names
        import jax

        import bcd_jax

        namespace.update(
            X=bcd_jax.teacher_problem(jax.random.key(0), n=32, d_in=40)[0],
            Y=bcd_jax.teacher_problem(jax.random.key(0), n=32, d_in=40)[1],
            config=bcd_jax.Config(depth=3, width=6, k_v=5, k_w=5, sweeps=20, step_size="auto"),
            key=jax.random.key(0),
            bcd_jax=bcd_jax,
        )
    exec(compile(code, f"README block {index}", "exec"), namespace)
