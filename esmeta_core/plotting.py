"""The one tail every figure of the experiments and reports ends with."""

from __future__ import annotations

import os
from typing import Any

DPI = 120  # every committed PNG under results/ is written at this resolution


def save_figure(fig: Any, out: str | os.PathLike | None = None) -> Any:
    """Lays ``fig`` out tightly, writes it to ``out`` as a PNG (if given) and returns it.

    Args:
      fig: a ``matplotlib.figure.Figure``.
      out: the file to write (its suffix picks the format), or ``None`` to only lay out.

    Returns:
      ``fig``, so a plotting function can end with ``return save_figure(fig, out)``.
    """
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=DPI)
    return fig
