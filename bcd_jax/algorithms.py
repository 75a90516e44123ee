"""The BCD variants of the paper, one registry.

Algorithm 1 (strictly monotone activation) and Algorithm 3 (ReLU with skip connections and a
non-negative projection) share one sweep (``bcd_jax.solver``); they differ only in the
switches below. The no-skip ReLU run that the paper draws dashed in Figure 2 is the third
entry. Adding a variant is one entry here; the tests are parametrized over ``ALGORITHMS``.
"""

from __future__ import annotations

import dataclasses

__all__ = ["AlgorithmSpec", "ALGORITHMS", "get_algorithm"]


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """The structural switches that distinguish the paper's algorithms.

    Attributes:
      name: registry name.
      paper: where it is in the paper.
      skip: hidden layers j >= 2 compute ``sigma(W_j h) + h`` (Algorithm 3).
      project_nonneg: ``V <- max(V, 0)`` after each V block update (Algorithm 3).
      train_output_weight: ``W_L`` takes a gradient step every sweep (Algorithm 1 only;
        Algorithm 3 keeps it fixed, Lemma 5.1).
      linear_first_layer_fit: the K_W loop on ``W_1`` fits the linear surrogate
        ``||W_1 x_i - V_{1,i}||^2`` instead of ``||sigma(W_1 x_i) - V_{1,i}||^2`` (Algorithm 3).
      svb_output_weight: singular value bounding is applied to ``W_L`` at init (Algorithm 1
        bounds ``W_2..W_L``, Algorithm 3 ``W_2..W_{L-1}``).
      default_svb: ``(s1, s2)`` of the matching theorem (4.1: (3/4, 5/4); 5.3: (0, 1/4)).
    """

    name: str
    paper: str
    skip: bool
    project_nonneg: bool
    train_output_weight: bool
    linear_first_layer_fit: bool
    svb_output_weight: bool
    default_svb: tuple[float, float]


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "monotone": AlgorithmSpec(
        name="monotone",
        paper="Algorithm 1 (Theorem 4.1)",
        skip=False,
        project_nonneg=False,
        train_output_weight=True,
        linear_first_layer_fit=False,
        svb_output_weight=True,
        default_svb=(0.75, 1.25),
    ),
    "relu_skip": AlgorithmSpec(
        name="relu_skip",
        paper="Algorithm 3 (Theorem 5.3)",
        skip=True,
        project_nonneg=True,
        train_output_weight=False,
        linear_first_layer_fit=True,
        svb_output_weight=False,
        default_svb=(0.0, 0.25),
    ),
    "relu_noskip": AlgorithmSpec(
        name="relu_noskip",
        paper="Algorithm 3 without skip connections (Figure 2, dashed line)",
        skip=False,
        project_nonneg=True,
        train_output_weight=False,
        linear_first_layer_fit=True,
        svb_output_weight=False,
        default_svb=(0.0, 0.25),
    ),
}


def get_algorithm(name: str) -> AlgorithmSpec:
    if isinstance(name, AlgorithmSpec):
        return name
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown name {name!r}; expected one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]
