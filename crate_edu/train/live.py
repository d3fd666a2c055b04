"""Live training curves: one figure that updates in place in Jupyter, one text line elsewhere.

Plug a :class:`LiveCurves` into :func:`crate_edu.train.train` or :func:`~crate_edu.train.fit`
as ``on_epoch_end``::

    from crate_edu.train.live import LiveCurves, quiet
    live = LiveCurves(total_epochs=cfg.epochs, title="CRATE on CIFAR-10")
    with quiet() as log:                 # the trainer's per-epoch text goes to log.lines
        result = train(cfg, "runs/c10", on_epoch_end=live)

In a Jupyter kernel the first epoch displays a figure through an IPython display handle and every
later epoch replaces that same output (no wall of figures or text); elsewhere (a terminal, a
script, a test) each epoch prints one plain line. Other finished runs can be drawn alongside for
comparison (``compare={"CRATE": result.history}``).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from typing import Any, TextIO

__all__ = ["LiveCurves", "in_notebook", "quiet", "format_record"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where rich outputs can be displayed and updated)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def format_record(record: Mapping[str, Any], total_epochs: int | None = None, label: str = "") -> str:
    """One line for an epoch record of :func:`crate_edu.train.fit` (losses in nats, accuracies in %)."""
    of = f"/{total_epochs}" if total_epochs else ""
    head = f"{label}: " if label else ""
    return (
        f"{head}epoch {record['epoch']}{of}  train loss {record['train_loss']:.3f} "
        f"acc {100 * record['train_acc']:.1f} %  |  test loss {record['test_loss']:.3f} "
        f"acc {100 * record['test_acc']:.1f} %"
    )


class LiveCurves:
    """An ``on_epoch_end`` callback that draws the loss and accuracy curves as training goes.

    Args:
        total_epochs: length of the x axis (so the plot does not rescale as it grows).
        title: figure title.
        label: name of this run in the legend and the text lines.
        compare: finished runs to draw alongside, by label (their ``history`` lists).
        notebook: force the figure (True) or the text (False) output; None: detect Jupyter.
        stream: where the text lines go (default: ``sys.stdout`` at construction, so that
            :func:`quiet` around the training does not swallow them).

    Attributes:
        history: the records received so far (also the figure's data).
        figures_drawn: how many times the figure was (re)drawn.
    """

    def __init__(
        self,
        total_epochs: int | None = None,
        *,
        title: str = "Training curves (live)",
        label: str = "",
        compare: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        notebook: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if total_epochs is not None and total_epochs < 1:
            raise ValueError(f"total_epochs must be a positive integer or None, got {total_epochs!r}")
        self.total_epochs = total_epochs
        self.title = title
        self.label = label
        self.compare = {k: list(v) for k, v in (compare or {}).items()}
        self.notebook = in_notebook() if notebook is None else bool(notebook)
        self.stream = stream if stream is not None else sys.stdout
        self.history: list[dict[str, Any]] = []
        self.figures_drawn = 0
        self._handle: Any = None

    def __call__(self, record: Mapping[str, Any]) -> None:
        missing = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc"} - set(record)
        if missing:
            raise ValueError(
                f"an epoch record needs the keys of crate_edu.train.fit's history; missing {sorted(missing)}"
            )
        self.history.append(dict(record))
        if self.notebook:
            self._draw()
        else:
            print(format_record(record, self.total_epochs, self.label), file=self.stream, flush=True)

    def figure(self):
        """The current curves as a new matplotlib figure (this run plus the ``compare`` runs)."""
        from crate_edu.plotting.training import plot_curves

        runs = dict(self.compare)
        runs[self.label or "this run"] = self.history
        if len(runs) == 1:
            runs = {"": self.history}
        return plot_curves(runs, title=self.title, total_epochs=self.total_epochs)

    def _draw(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)  # the handle holds the picture; no second copy at the end of the cell
        self.figures_drawn += 1


class _Log:
    """The text captured by :func:`quiet`."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()


@contextmanager
def quiet() -> Iterator[_Log]:
    """Capture what is printed inside the block (the trainer's per-epoch lines) into ``log.lines``.

    Warnings and errors still appear (they go to stderr); a :class:`LiveCurves` created before the
    block keeps printing to the real output.
    """
    log = _Log()
    with redirect_stdout(log.buffer):
        yield log
