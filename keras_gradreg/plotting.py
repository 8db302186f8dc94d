"""The paper's figure: % misclassified against adversarial distance, one curve per model."""

from typing import Sequence

import numpy as np


def error_curve(distances: np.ndarray) -> tuple:
    """(sorted distances, fraction of images with distance <= each): a step function."""
    finite = np.sort(np.asarray(distances, float)[np.isfinite(distances)])
    return finite, np.arange(1, len(finite) + 1) / max(len(distances), 1)


def plot_error_curves(reports: Sequence, path: str) -> None:
    """Plots each report's error against distance (and its lower bound, dashed) to `path`.

    The empirical curve is the fraction of images whose best adversarial distance is
    <= eps; the bound's curve, the fraction whose L-bound is <= eps, lies above it
    wherever the bound holds.
    """
    import matplotlib  # imported here: only plotting needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for report in reports:
        x, fraction = error_curve(report.distances)
        line, = axis.step(x, 100 * fraction, where="post", label=report.name)
        if report.lower_bounds is not None:
            bx, bfraction = error_curve(report.lower_bounds)
            axis.step(bx, 100 * bfraction, where="post", linestyle="--", color=line.get_color(),
                      label=f"{report.name} (lower bound)")
    for eps in reports[0].epsilons:
        axis.axvline(eps, color="0.85", linewidth=0.8, zorder=0)
    axis.set_xlabel(f"adversarial distance ({reports[0].attack_norm})")
    axis.set_ylabel("% misclassified")
    axis.set_ylim(0, 100)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
