"""Per-sample output losses, one registry (the paper's Appendix A-B: convex losses).

A loss is a function ``loss(pred, target) -> scalar`` of ONE sample's network output
``pred: (d_out,)`` and target row ``target: (d_out,)``. The output-layer blocks (W_L and
V_{L-1}) take gradient steps on it; every hidden block is unchanged. Gradients come from
autodiff, so a user-supplied convex loss needs nothing but its values.

Attributes declared by each built-in:

* ``report_scale``: reported losses are ``report_scale * loss`` — 2 for the squared loss, so
  that reports use the paper's ``||.||^2`` while the steps use ``1/2 ||.||^2``;
* ``task``: ``"regression"``, ``"multiclass"`` (targets are one-hot rows; integer labels are
  converted) or ``"binary"`` (one output, targets in {0, 1});
* ``smoothness``: a Lipschitz constant of ``grad_pred loss`` (used by ``step_size="auto"``);
  ``None`` for a non-smooth loss, for which 1 is used;
* ``quadratic``: the loss is exactly ``1/2 ||pred - target||^2``, so the blocks next to the
  output have closed-form minimisers (least squares); a family takes those fast paths for any
  loss that declares it, never by testing a name.

Adding a loss is one function plus one entry in ``LOSSES``; the tests run over the dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bcd_jax.registry import Registry

__all__ = ["Loss", "LOSSES", "get_loss", "register_loss", "loss_name"]


TASKS = ("regression", "multiclass", "binary")


@dataclasses.dataclass(frozen=True)
class Loss:
    """A per-sample output loss and the facts the algorithms use (see the module docstring).

    Attributes:
      name: registry name, or the function's ``__name__`` for an unregistered callable.
      fn: ``(pred, target) -> scalar`` for one sample.
      report_scale: reported losses are ``report_scale * loss`` (2 for the squared losses).
      task: ``"regression"``, ``"multiclass"`` or ``"binary"``.
      smoothness: a Lipschitz constant of ``grad_pred loss``, or ``None``.
      quadratic: ``fn`` is exactly ``1/2 ||pred - target||^2``.
    """

    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    report_scale: float = 1.0
    task: str = "regression"
    smoothness: float | None = None
    quadratic: bool = False

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"loss.task: expected one of {list(TASKS)}, got {self.task!r}")

    def __call__(self, pred, target):
        return self.fn(pred, target)

    def accuracy(self, pred: jax.Array, target: jax.Array) -> jax.Array:
        """Mean accuracy over a batch ``(n, d_out)``; NaN for regression."""
        if self.task == "multiclass":
            return jnp.mean(jnp.argmax(pred, -1) == jnp.argmax(target, -1))
        if self.task == "binary":
            return jnp.mean((pred[:, 0] > 0) == (target[:, 0] > 0.5))
        return jnp.asarray(jnp.nan, pred.dtype)


def squared(pred, target):
    r = pred - target
    return 0.5 * jnp.dot(r, r)


def softmax_cross_entropy(pred, target):
    return -jnp.dot(target, jax.nn.log_softmax(pred))


def logistic(pred, target):
    # Binary cross-entropy with logits, written stably: softplus(p) - y p.
    return jnp.sum(jax.nn.softplus(pred) - target * pred)


def hinge(pred, target):
    # Crammer-Singer multiclass hinge on one-hot targets: max(0, 1 + max_{c != y} p_c - p_y).
    true_score = jnp.dot(pred, target)
    margins = jnp.where(target > 0.5, -jnp.inf, 1.0 + pred - true_score)
    return jnp.maximum(jnp.max(margins), 0.0)


LOSSES: Registry[Loss] = Registry("loss", group="bcd_jax.losses")
for _loss in (
    Loss("squared", squared, report_scale=2.0, task="regression", smoothness=1.0, quadratic=True),
    # The squared loss on one-hot class rows (Zeng et al.'s classification loss): labels are encoded
    # and accuracy reported as for the other classification losses.
    Loss("squared_multiclass", squared, report_scale=2.0, task="multiclass", smoothness=1.0, quadratic=True),
    Loss("softmax_cross_entropy", softmax_cross_entropy, task="multiclass", smoothness=0.5),
    Loss("logistic", logistic, task="binary", smoothness=0.25),
    Loss("hinge", hinge, task="multiclass", smoothness=None),
):
    LOSSES.register(_loss.name, _loss, module=__name__)


def register_loss(loss: Loss, *, overwrite: bool = False) -> Loss:
    """Adds a user :class:`Loss` to ``LOSSES`` under its name and returns it (so configs,
    TOML files and checkpoints can name it)."""
    if not isinstance(loss, Loss):
        raise ValueError(f"loss: expected a bcd_jax.Loss, got {type(loss).__name__}")
    return LOSSES.register(loss.name, loss, overwrite=overwrite, module=getattr(loss.fn, "__module__", None))


def loss_name(loss) -> str | None:
    """The registry name that stands for ``loss`` exactly (a registered object), or None."""
    if isinstance(loss, str):
        return loss if loss in LOSSES else None
    name = getattr(loss, "name", None)
    return name if LOSSES.get(name) is loss else None


def get_loss(loss) -> Loss:
    """Resolves a registry name or a user callable ``loss(pred, target) -> scalar``."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss: unknown name {loss!r}; expected one of {sorted(LOSSES)} or a callable")
        return LOSSES[loss]
    if callable(loss):
        probe = jnp.zeros((2,), jnp.float32)
        try:
            out = jax.eval_shape(loss, probe, probe)
        except Exception as exc:  # noqa: BLE001 - re-raised with the argument named
            raise ValueError(f"loss: the callable {loss!r} failed on (pred, target) vectors: {exc}") from exc
        if getattr(out, "shape", None) != ():
            raise ValueError(
                f"loss: the callable {loss!r} must return a scalar per sample, got shape {getattr(out, 'shape', None)}"
            )
        return Loss(getattr(loss, "__name__", type(loss).__name__), loss)
    raise ValueError(f"loss: expected a name from {sorted(LOSSES)} or a callable, got {type(loss).__name__} {loss!r}")
