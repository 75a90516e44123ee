"""The figure of one experiment: training loss and layer losses against sweeps, and accuracies."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from bcd_jax.driver.fit import FitResult
from bcd_jax.io import atomic_write

__all__ = ["plot_experiment"]


def plot_experiment(results: dict[str, FitResult], path: str | Path, title: str = "") -> None:
    """Log-scale training loss (black; comparisons dashed) and per-layer losses against sweeps, and
    for a classification loss a second panel with the train / validation / test accuracy.

    The PNG is written atomically (``bcd_jax.io.atomic_write``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main_name, main = next(iter(results.items()))
    h = main.history
    classification = main.config.resolved_network.loss_fn.task != "regression"
    panels = 2 if classification else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.4), dpi=150, squeeze=False)
    ax = axes[0, 0]
    sweeps = np.arange(len(h.train_loss))
    ax.plot(sweeps, h.train_loss, color="black", lw=2.0, label=f"training loss ({main_name})")
    for name, res in list(results.items())[1:]:
        other = res.history.train_loss
        ax.plot(np.arange(len(other)), other, color="black", lw=1.6, ls="--", label=f"training loss ({name})")
    layer_losses = getattr(h.extras, "layer_losses", None)
    if layer_losses is not None:
        layer_losses = np.asarray(layer_losses)
        colors = plt.get_cmap("tab10")
        for j in range(layer_losses.shape[1]):
            # Extras describe a sweep (entry 0 is NaN), and the layer losses start at 0 (V = forward pass).
            ax.plot(sweeps[1:], layer_losses[1:, j], color=colors(j % 10), lw=1.2, label=f"layer {j + 1} loss")
    ax.set_yscale("log")
    ax.set_xlabel("sweep (outer iteration k)")
    ax.set_ylabel("loss (mean over samples)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    if classification:
        acc = axes[0, 1]
        for part, style in (("train", "-"), ("val", "--"), ("test", ":")):
            values = np.asarray(getattr(h, f"{part}_accuracy"))
            if np.isfinite(values).any():
                acc.plot(sweeps, values, ls=style, lw=1.6, label=f"{part} accuracy")
        acc.set_xlabel("sweep (outer iteration k)")
        acc.set_ylabel("accuracy")
        acc.grid(True, which="major", alpha=0.3)
        acc.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Description": f"bcd_jax run {main.run_id}"})
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
