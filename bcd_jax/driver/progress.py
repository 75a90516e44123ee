"""Progress display for ``fit``: none, a text line, or tqdm (pluggable, as in diffrax).

A meter has ``start(total)``, ``update(done, info)`` (called on the host between compiled
chunks, with the last sweep's record) and ``close()``; ``active`` says whether it shows anything.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, runtime_checkable

__all__ = ["ProgressMeter", "NoProgress", "TextProgress", "TqdmProgress", "get_progress", "PROGRESS_CHOICES"]

PROGRESS_CHOICES = ("auto", "none", "text", "tqdm")


@runtime_checkable
class ProgressMeter(Protocol):
    active: bool

    def start(self, total: int, done: int = 0) -> None: ...

    def update(self, done: int, info: Any) -> None: ...

    def close(self) -> None: ...


def _train_loss(info) -> float:
    try:
        return float(info.train_loss)
    except (AttributeError, TypeError, ValueError):
        return float("nan")


class NoProgress:
    """Shows nothing."""

    active = False

    def start(self, total: int, done: int = 0) -> None:
        pass

    def update(self, done: int, info: Any) -> None:
        pass

    def close(self) -> None:
        pass


class TextProgress:
    """One carriage-return line on ``stream`` (default stderr), shown once a run has taken ``delay`` seconds."""

    active = True

    def __init__(self, stream=None, delay: float = 2.0, width: int = 24):
        self.stream, self.delay, self.width = stream, delay, width
        self.total, self.start_time, self.shown = 0, 0.0, False

    def start(self, total: int, done: int = 0) -> None:
        self.total, self.start_time, self.shown = total, time.perf_counter(), False

    def update(self, done: int, info: Any) -> None:
        elapsed = time.perf_counter() - self.start_time
        if elapsed < self.delay:
            return
        stream = self.stream or sys.stderr
        filled = int(self.width * done / max(self.total, 1))
        stream.write(
            f"\rbcd_jax [{'#' * filled}{'.' * (self.width - filled)}] sweep {done}/{self.total}  "
            f"train loss {_train_loss(info):.3e}  {elapsed:.1f}s"
        )
        stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            stream = self.stream or sys.stderr
            stream.write("\n")
            stream.flush()


class TqdmProgress:
    """A tqdm bar (``pip install tqdm``) with the training loss as its postfix."""

    active = True

    def __init__(self, **tqdm_kwargs):
        try:
            import tqdm  # noqa: F401
        except ImportError:
            raise ValueError("progress: 'tqdm' needs the tqdm package; pip install tqdm, or use 'text'") from None
        self.kwargs, self.bar = tqdm_kwargs, None

    def start(self, total: int, done: int = 0) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=done, unit="sweep", **self.kwargs)

    def update(self, done: int, info: Any) -> None:
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix(train_loss=f"{_train_loss(info):.3e}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def get_progress(progress) -> ProgressMeter:
    """``"auto"`` (a text line when stderr is a terminal), ``"none"``/None, ``"text"``, ``"tqdm"``, or a meter."""
    if progress is None or progress == "none":
        return NoProgress()
    if progress == "auto":
        return TextProgress() if getattr(sys.stderr, "isatty", lambda: False)() else NoProgress()
    if progress == "text":
        return TextProgress()
    if progress == "tqdm":
        return TqdmProgress()
    if isinstance(progress, ProgressMeter):
        return progress
    raise ValueError(
        f"progress: expected one of {PROGRESS_CHOICES}, None or a meter with start/update/close, got {progress!r}"
    )
