"""Shared fixtures: scoped float64 and a compile counter; registers the test family ``"toy_gd"``."""

from __future__ import annotations

import logging
import os

# The suite compiles hundreds of small programs whose run time is negligible: XLA's backend at
# optimisation level 0 compiles them about 20% faster. Only the tests set this; the library never
# changes XLA's or JAX's settings.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402 - after XLA_FLAGS, which the backend reads when it starts
import pytest

# Registers "toy_gd" before the test modules are collected: the common suite (tests/test_families.py)
# is parametrised over the registry, so it covers the toy family too.
import toy_family  # noqa: F401, I001

import bcd_jax


@pytest.fixture
def x64():
    """Float64 for the duration of one test only (never global for the session)."""
    with jax.enable_x64(True):
        yield


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def count(self, name: str | None = None) -> int:
        """Number of XLA compilations logged (optionally of functions whose name contains ``name``)."""
        hits = [m for m in self.messages if m.startswith("Compiling ")]
        if name is not None:
            hits = [m for m in hits if name in m.split(" with ")[0]]
        return len(hits)


@pytest.fixture
def compile_log():
    """Captures JAX's compile log (``jax.log_compiles``) for the duration of a test."""
    handler = _CompileLog()
    logger = logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Frees the module's compiled programs when it ends: a whole session's worth would exhaust
    the process's memory mappings (each XLA:CPU executable holds its own)."""
    yield
    bcd_jax.clear_caches()
