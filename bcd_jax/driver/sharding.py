"""Sample sharding over a 1-D device mesh, and runs spread over several processes.

The samples (X, Y and every per-sample block, see :mod:`bcd_jax.driver.blocks`) are split over
the mesh axis; every other block is replicated, so a weight gradient's sum over samples
becomes an all-reduce that XLA inserts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["check_mesh", "auto_mesh", "global_samples", "replicate", "shard_samples", "shard_blocks"]


def check_mesh(mesh, n: int) -> None:
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(f"mesh: expected a 1-D jax.sharding.Mesh, got {mesh!r}")
    if n % mesh.size:
        raise ValueError(f"mesh: n = {n} samples do not split evenly over {mesh.size} devices; expected a multiple")


def auto_mesh(mesh: Mesh) -> Mesh:
    """The mesh with an Auto axis type, so that XLA places the collectives (a mesh from
    ``jax.make_mesh`` defaults to Explicit axes, which would need annotations inside)."""
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,))


def _rows(mesh: Mesh) -> NamedSharding:
    mesh = auto_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def global_samples(mesh: Mesh, *arrays):
    """Process-local samples -> global arrays sharded over the mesh axis (several processes)."""
    rows = _rows(mesh)
    return tuple(jax.make_array_from_process_local_data(rows, np.asarray(a)) for a in arrays)


def replicate(mesh: Mesh, x):
    """Puts a host value that every process holds identically on all devices of the mesh."""
    sharding = NamedSharding(auto_mesh(mesh), PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def shard_samples(mesh: Mesh, *arrays):
    """Splits each array's leading (sample) axis over the mesh."""
    rows = _rows(mesh)
    return tuple(jax.device_put(a, rows) for a in arrays)


def shard_blocks(mesh: Mesh, blocks, per_sample):
    """Per-sample blocks split over the mesh, the others replicated."""
    rows = _rows(mesh)
    return jax.tree.map(lambda a, split: jax.device_put(a, rows) if split else replicate(mesh, a), blocks, per_sample)
