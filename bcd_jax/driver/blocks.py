"""What the driver reads off a family's blocks pytree: their names and which ones run over samples.

Nothing here is declared by the family. Names come from the leaf paths: a field ``W`` holding
a tuple gives ``W_1, W_2, ...`` (1-based, the paper's layer index), a field holding one array
gives its field name, dict keys are used as they are. Whether a block holds one row per
sample (split across devices by sample sharding) is read from its shape: the blocks are built
abstractly for two sample counts, and the leaves whose leading axis follows the count are the
per-sample ones.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["block_names", "block_arrays", "per_sample_mask"]


def _component(key) -> tuple[str, str]:
    if isinstance(key, jax.tree_util.SequenceKey):
        return "_", str(key.idx + 1)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return ".", key.name
    if isinstance(key, jax.tree_util.DictKey):
        return ".", str(key.key)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return "_", str(key.key + 1)
    return ".", str(key)


def _name(path) -> str:
    out = ""
    for key in path:
        sep, text = _component(key)
        out = text if not out else f"{out}{sep}{text}"
    return out or "blocks"


def block_names(blocks) -> list[str]:
    """The name of every leaf of ``blocks``, in leaf order (``["W_1", "W_2", "V_1"]``)."""
    return [_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(blocks)[0]]


def block_arrays(blocks) -> dict[str, jax.Array]:
    """``{name: leaf}`` of ``blocks``, in leaf order."""
    leaves = jax.tree_util.tree_leaves(blocks)
    return dict(zip(block_names(blocks), leaves))


@functools.lru_cache(maxsize=128)
def per_sample_mask(algorithm, network, n: int, d_in: int, d_out: int, dtype) -> tuple[bool, ...]:
    """For each leaf of ``algorithm``'s blocks: whether its leading axis runs over the samples.

    Found by building the blocks abstractly (no compute) for ``n`` and ``n + 1`` samples.
    """
    from bcd_jax.algorithms.base import make_data  # the driver's only view of a family is the protocol

    def shapes(m):
        weights = tuple(jax.ShapeDtypeStruct(s, dtype) for s in network.layer_shapes(d_in, d_out))
        x = jax.ShapeDtypeStruct((m, d_in), dtype)
        y = jax.ShapeDtypeStruct((m, d_out), dtype)
        out = jax.eval_shape(lambda w, x, y: algorithm.init(w, make_data(x, y, network), network), weights, x, y)
        return [leaf.shape for leaf in jax.tree_util.tree_leaves(out)]

    a, b = shapes(n), shapes(n + 1)
    return tuple(bool(sa) and sa[0] == n and sb[0] == n + 1 for sa, sb in zip(a, b))


def mask_like(blocks, mask) -> object:
    """``mask`` (one bool per leaf) as a pytree shaped like ``blocks``."""
    treedef = jax.tree_util.tree_structure(blocks)
    return jax.tree_util.tree_unflatten(treedef, list(mask))


def floating_leaves(blocks) -> list[jax.Array]:
    return [a for a in jax.tree_util.tree_leaves(blocks) if jnp.issubdtype(a.dtype, jnp.floating)]
