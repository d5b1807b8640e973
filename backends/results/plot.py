"""``sweepdeck results plot``: a static chart (SVG or PNG) of one or more results, no browser.

matplotlib with its non-interactive Agg backend draws the same three plots as
the terminal (:mod:`backends.results.series`): throughput vs latency, TTFT and
ITL percentiles vs load, output tok/s over time — several runs overlaid.
matplotlib is imported only here, when a chart is asked for.
"""

from __future__ import annotations

from pathlib import Path

from backends.results.model import Result
from backends.results.series import AXES, PLOT_TITLES, PLOTS, series
from config.errors import SweepdeckError

FORMATS = (".svg", ".png")


def plot(results: list[Result], out: Path, dpi: int = 120) -> Path:
    """Write the chart to ``out`` (.svg or .png) and return it.

    Raises:
        SweepdeckError: another suffix, nothing to plot, or the file cannot be written.
    """
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise SweepdeckError(f"Cannot write a chart as {out.name!r}.", "Name the output FILE.svg or FILE.png.")
    kinds = [k for k in PLOTS if series(k, results)]
    if not kinds:
        raise SweepdeckError("Nothing to plot: no load point has throughput and latency figures.")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # A fixed hash salt keeps SVG ids the same from run to run (diffable charts in a PR).
    matplotlib.rcParams["svg.hashsalt"] = "sweepdeck"
    # Text stays text in the SVG (searchable, smaller) instead of glyph outlines.
    matplotlib.rcParams["svg.fonttype"] = "none"
    fig, axes = plt.subplots(len(kinds), 1, figsize=(8, 3.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        for s in series(kind, results):
            style = "-" if kind == "timeline" else "-o"
            ax.plot(s.x, s.y, style, label=s.name, markersize=3, linewidth=1.2)
        ax.set_title(PLOT_TITLES[kind], fontsize=10)
        ax.set_xlabel(AXES[kind][0], fontsize=8)
        ax.set_ylabel(AXES[kind][1], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(", ".join(r.name for r in results), fontsize=11)
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format=suffix[1:], dpi=dpi, metadata={"Date": None} if suffix == ".svg" else None)
    except OSError as exc:
        raise SweepdeckError(f"Could not write {out}: {exc.strerror or exc}.") from None
    finally:
        plt.close(fig)
    return out
