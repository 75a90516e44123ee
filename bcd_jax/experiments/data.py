"""An experiment's data as arrays: the teacher problem, a bundled data set or the user's file.

Every real data set goes through :func:`bcd_jax.datasets.load_dataset` (splits, validation
part, standardisation, label checks), so Python, ``bcd-jax run`` and grids load a file the same
way. The network's loss must fit the data's task: a classification set with a regression loss
(or the reverse) is refused with the loss to use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bcd_jax.config import Config
from bcd_jax.data import teacher_split
from bcd_jax.datasets import Dataset, load_dataset
from bcd_jax.experiments.spec import TEACHER, DataSpec, Experiment

__all__ = ["experiment_data", "teacher_arrays", "check_task"]


def teacher_arrays(config: Config, data: DataSpec, dtype=jnp.float32):
    """``(X, Y, X_test, Y_test)`` of the teacher problem ``data`` describes, with the first hidden
    layer's activation of ``config`` (Section 6)."""
    network = config.network
    return teacher_split(
        jax.random.key(data.seed),
        n=data.n,
        d_in=data.d_in,
        teacher_width=data.teacher_width,
        activation=network.layer_activations[0],  # resolved with the network's negative slope
        negative_slope=network.negative_slope,
        d_out=data.d_out,
        dtype=dtype,
        n_test=data.n_test,
    )


def experiment_data(experiment: Experiment, dtype=jnp.float32) -> Dataset:
    """The experiment's data as a :class:`bcd_jax.datasets.Dataset` (train, validation, test arrays).

    The teacher problem's training set is :func:`bcd_jax.teacher_problem`'s (the Section 6 data)
    and its test set ``n_test`` fresh samples of the same teacher. A real data set is
    ``load_dataset(dataset or path, ...)`` with the ``[data]`` fields.
    """
    config, data = experiment.config, experiment.data
    if data.is_teacher:
        if data.validation_fraction:
            raise ValueError("data.validation_fraction: the teacher problem has no validation split; leave it at 0")
        X, Y, X_test, Y_test = teacher_arrays(config, data, dtype)
        return Dataset(TEACHER, "regression", None, *(np.asarray(a) for a in (X, Y, X_test, Y_test)))
    loss = config.network.loss_fn
    source = data.path if data.dataset == "file" else data.dataset
    split = load_dataset(
        source,
        test=data.test_path,
        test_fraction=data.test_fraction,
        validation_fraction=data.validation_fraction,
        seed=data.seed,
        standardize=data.standardize,
        label=data.label,
        labels=data.labels,
        task=data.task,
        num_classes=config.network.num_classes,
    )
    check_task(split, loss)
    return split


def check_task(split: Dataset, loss) -> None:
    """Refuses a loss whose task does not fit the data's (a ``ValueError`` naming ``network.loss``)."""
    if split.task == loss.task:
        return
    if split.task == "regression":
        fix = "'squared'"
    elif split.task == "binary":
        fix = "'logistic' (or 'squared_multiclass' / 'softmax_cross_entropy' over 2 classes)"
    else:
        fix = "'squared_multiclass' (the squared loss on one-hot rows), 'softmax_cross_entropy' or 'hinge'"
    if split.task == "binary" and loss.task == "multiclass":
        return  # two classes as a multiclass problem is fine
    raise ValueError(
        f"network.loss: {loss.name!r} is a {loss.task} loss but the data {split.name!r} are {split.task}"
        + (f" ({split.num_classes} classes)" if split.num_classes else "")
        + f"; use network.loss = {fix}"
    )
