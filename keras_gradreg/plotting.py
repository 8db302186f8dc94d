"""The paper's figure (% misclassified against adversarial distance, one curve per model)
and the frontier's, each drawn on a Figure of its own with its own canvas: the caller's
matplotlib backend and pyplot state are left as they are (a notebook keeps its inline
plots)."""

from typing import Optional, Sequence

import numpy as np


def _figure(**kwargs):
    """A matplotlib Figure with an Agg canvas of its own, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported when plotting
    from matplotlib.figure import Figure

    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def error_curve(distances: np.ndarray) -> tuple:
    """(sorted distances, fraction of images with distance <= each): a step function."""
    finite = np.sort(np.asarray(distances, float)[np.isfinite(distances)])
    return finite, np.arange(1, len(finite) + 1) / max(len(distances), 1)


def plot_error_curves(reports: Sequence, path: str) -> None:
    """Plots each report's error against distance (and its lower bound, dashed) to `path`.

    The empirical curve is the fraction of images whose best adversarial distance is
    <= epsilon; the bound's curve, the fraction whose L-bound is <= epsilon, lies above it
    wherever the bound holds.
    """
    figure = _figure(figsize=(6, 4))
    axis = figure.subplots()
    for report in reports:
        x, fraction = error_curve(report.distances)
        line, = axis.step(x, 100 * fraction, where="post", label=report.name)
        if report.lower_bounds is not None:
            bx, bfraction = error_curve(report.lower_bounds)
            axis.step(bx, 100 * bfraction, where="post", linestyle="--", color=line.get_color(),
                      label=f"{report.name} (lower bound)")
    for epsilon in reports[0].epsilons:
        axis.axvline(epsilon, color="0.85", linewidth=0.8, zorder=0)
    axis.set_xlabel(f"adversarial distance ({reports[0].attack_norm})")
    axis.set_ylabel("% misclassified")
    axis.set_ylim(0, 100)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


_COLOURS = {"plain": "0.3", "gradreg": "tab:blue", "fgsm_rs": "tab:orange",
            "n_fgsm": "tab:brown", "free_at": "tab:green", "pgd_at": "tab:red",
            "trades": "tab:gray", "double_backprop": "navy", "local_linearity": "tab:purple",
            "adaptive_local_linearity": "tab:pink", "gradient_penalty": "tab:cyan",
            "grad_align": "tab:olive"}
"""A colour per training method, and per regulariser of single-step training."""
_MARKERS = "osD^v<>ph*"
"""The markers of a method's variants (lambdas, steps, activations): one colour, one marker each."""


def plot_frontier(points: Sequence, epsilon: float, path: str, norm: str = "l_inf",
                  recommended: Optional[str] = None) -> None:
    """Robust error at epsilon and clean error against training time, one marker per
    configuration (frontier.Point), error bars over the seeds; the Pareto-optimal ones
    filled and joined by the frontier's staircase; a legend names every marker (no label
    is printed over the points); `recommended`, a configuration's name, is ringed. Points
    attacked at several radii get a third panel: robust error against the radius."""
    from matplotlib import ticker  # imported when plotting

    several = len(points[0].epsilons) > 1
    figure = _figure(figsize=(15 if several else 10.5, 5.2))
    axes = figure.subplots(1, 3 if several else 2)
    colour = lambda p: _COLOURS.get(  # noqa: E731
        p.method if p.regularizer == "none" else p.regularizer, "k")
    markers, used = {}, {}  # variants of a method (lambdas, steps) share its colour, not its marker
    for p in points:
        used[colour(p)] = used.get(colour(p), -1) + 1
        markers[p.name] = _MARKERS[used[colour(p)] % len(_MARKERS)]
    panels = ((axes[0], "robust_error", "robust_spread", f"% robust error at {norm} {epsilon:g}"),
              (axes[1], "clean_error", "clean_spread", "% clean error"))
    for axis, key, spread, label in panels:
        for p in points:
            value = 100 * getattr(p, key)
            axis.errorbar(p.train_seconds, value, yerr=50 * getattr(p, spread),
                          xerr=p.seconds_spread / 2, fmt=markers[p.name], color=colour(p),
                          markerfacecolor=colour(p) if p.pareto else "white", capsize=2,
                          markersize=7, label=p.name if axis is axes[0] else None)
            if p.name == recommended:
                axis.plot(p.train_seconds, value, "o", markersize=17, markerfacecolor="none",
                          markeredgecolor="k", markeredgewidth=1.5, zorder=5)
        axis.set_xscale("log")
        for ticks in (axis.xaxis.set_major_formatter, axis.xaxis.set_minor_formatter):
            ticks(ticker.LogFormatter(labelOnlyBase=False))  # 4, 6, not 4 x 10^0
        axis.set_xlabel("training time (s, wall time of fit)")
        axis.set_ylabel(label)
    best = sorted((p for p in points if p.pareto), key=lambda p: p.train_seconds)
    axes[0].step([p.train_seconds for p in best], [100 * p.robust_error for p in best],
                 where="post", color="0.6", linewidth=1, zorder=0)
    title = "filled: Pareto-optimal (no run both faster and more robust)"
    axes[0].set_title(title + ("; ringed: recommended" if recommended else ""), fontsize=8)
    if several:
        for p in points:
            axes[2].plot(p.epsilons, [100 * e for e in p.robust_errors], marker=markers[p.name],
                         color=colour(p), linestyle="--" if p.method == "gradreg" else "-",
                         markerfacecolor=colour(p) if p.pareto else "white")
        axes[2].axvline(epsilon, color="0.85", linewidth=0.8, zorder=0)
        axes[2].set_xlabel(f"radius ({norm}); grey: the trained one")
        axes[2].set_ylabel("% robust error")
        axes[2].set_ylim(0, 100)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.06 + 0.045 * -(-len(labels) // 4), 1, 1))
    figure.savefig(path, dpi=120)
