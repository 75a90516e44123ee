"""Families, activations and losses from installed packages: the entry-point groups of the registries."""

from __future__ import annotations

import sys
import textwrap

import pytest

import bcd_jax

FAMILY = textwrap.dedent(
    """
    import dataclasses
    from typing import ClassVar, NamedTuple

    import bcd_jax


    class Hyper(NamedTuple):
        rate: float = 0.1


    @dataclasses.dataclass(frozen=True)
    class Plain(bcd_jax.Algorithm):  # declared by its entry point only
        Hyper: ClassVar[type] = Hyper

        def init(self, weights, data, network):
            return {"W": tuple(weights)}

        def step(self, blocks, data, cache, hyper, network):
            return blocks, ()

        def weights(self, blocks):
            return blocks["W"]


    @bcd_jax.algorithms.register("ep_decorated")
    @dataclasses.dataclass(frozen=True)
    class Decorated(Plain):  # registers itself when its module is imported
        pass
    """
)


@pytest.fixture
def installed_package(tmp_path, monkeypatch):
    """A package on the path whose distribution declares two families in the entry-point group."""
    (tmp_path / "ep_family.py").write_text(FAMILY)
    info = tmp_path / "ep_family-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-family\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[bcd_jax.algorithms]\nep_plain = ep_family:Plain\nep_decorated = ep_family:Decorated\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("ep_plain", "ep_decorated"):
        bcd_jax.ALGORITHMS.unregister(name)
    sys.modules.pop("ep_family", None)


def test_families_of_an_installed_package_load_on_first_use(installed_package):
    assert "ep_plain" not in bcd_jax.ALGORITHMS._entries  # not imported yet
    plain = bcd_jax.get_algorithm("ep_plain")
    decorated = bcd_jax.get_algorithm("ep_decorated")  # its module registered it while loading: no clash
    assert (plain.name, decorated.name) == ("ep_plain", "ep_decorated")  # names survive into checkpoints
    config = bcd_jax.Config(algorithm="ep_plain")
    assert bcd_jax.config.config_from_dict(config.to_dict()).algorithm == plain
    assert bcd_jax.ALGORITHMS.module_of("ep_plain") == "ep_family"


def test_an_unknown_name_says_how_to_provide_it():
    with pytest.raises(
        ValueError, match=r"unknown algorithm 'nope'.*--import MODULE.*'bcd_jax.algorithms' entry-point"
    ):
        bcd_jax.get_algorithm("nope")
