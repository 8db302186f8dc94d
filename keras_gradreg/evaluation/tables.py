"""Reports as the plain-text tables the scripts print and the documentation shows."""

from typing import Optional, Sequence

from keras_gradreg.attacks.budgets import STANDARD_BUDGET
from keras_gradreg.evaluation.reports import GIVEN
from keras_gradreg.evaluation.reports import MASKING_CHECK
from keras_gradreg.evaluation.reports import AutoAttackReport
from keras_gradreg.evaluation.reports import RobustnessReport


def render_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the title, the header, a rule, the rows; columns padded."""
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([title] + lines)


def _masking_cell(report: RobustnessReport) -> str:
    """The gradient-masking check's share in percent, flagged when it failed; "-" if not run."""
    check = next((c for c in report.checks if c.name == MASKING_CHECK), None)
    if check is None:
        return "-"
    return f"{100 * check.value:.1f}" + ("" if check.passed else " FAILED")


def format_table(reports: Sequence[RobustnessReport]) -> str:
    """The paper's table: % clean error, % error at each radius, mean distance, hours,
    and the share of images a gradient-free attack broke where gradient attacks failed
    (the gradient-masking sanity check)."""
    epsilons = reports[0].epsilons
    header = (["model", "% clean error"] + [f"% error at {e:.4g}" for e in epsilons]
              + ["mean distance", "training time (h)", "% gradient-free wins"])
    rows = [[r.name, f"{100 * r.clean_error:.2f}"] + [f"{100 * r.error_at(e):.2f}" for e in epsilons]
            + [f"{r.mean_distance:.3e}",
               "-" if r.training_time is None else f"{r.training_time / 3600:.3g}",
               _masking_cell(r)]
            for r in reports]
    first = reports[0]
    measured = f", top-{first.top_k} error" if first.top_k > 1 else ""
    return render_table(f"{first.attack_norm} attacks ({', '.join(first.attack_distances)}), "
                        f"best attack per image, {len(first.distances)} images{measured}",
                        header, rows)


def format_autoattack_table(reports: Sequence[AutoAttackReport],
                            minimum_distance_error: Optional[Sequence[float]] = None) -> str:
    """One row per report (model and radius): % clean and robust error, the robust error
    left after each attack of the cascade, and the seconds it took.

    Args:
      reports: the AutoAttack reports.
      minimum_distance_error: optionally, per report, the minimum-distance protocol's
        error at the same radius on the same images (`RobustnessReport.error_at(epsilon,
        images=...)`), shown beside it: AutoAttack below it means the cascade missed
        examples the other attacks found.
    """
    if minimum_distance_error is not None and len(minimum_distance_error) != len(reports):
        raise ValueError(f"minimum_distance_error holds {len(minimum_distance_error)} values for "
                         f"{len(reports)} reports; pass one per report, in their order.")
    attacks = reports[0].attacks
    extra = [] if minimum_distance_error is None else ["% minimum-distance error, same images"]
    header = (["model", "radius", "% clean error", "% robust error"] + extra
              + [f"% after {a}" for a in attacks] + ["seconds"])
    rows = [[r.name, f"{r.epsilon:.4g}", f"{100 * r.clean_error:.2f}",
             f"{100 * r.robust_error:.2f}"]
            + ([] if minimum_distance_error is None else [f"{100 * minimum_distance_error[i]:.2f}"])
            + [f"{100 - 100 * r.robust_after[a]:.2f}" for a in attacks]
            + [f"{sum(r.seconds.values()):.0f}"] for i, r in enumerate(reports)]
    first = reports[0]
    budget = "" if first.budget == STANDARD_BUDGET else f", budget {first.budget}"
    given = (f", counting first the {GIVEN} examples (verified within the radius)"
             if GIVEN in attacks else "")
    return render_table(f"AutoAttack ({', '.join(a for a in attacks if a != GIVEN)}), "
                        f"{first.attack_norm}, {len(first.broken_by)} images{budget}{given} "
                        "(robust accuracy = 100 - robust error)", header, rows)
