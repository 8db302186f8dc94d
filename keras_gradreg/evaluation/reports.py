"""What an evaluation measured: one report per model (and radius), and its sanity checks."""

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from keras_gradreg import deprecation
from keras_gradreg.attacks.budgets import STANDARD_BUDGET
from keras_gradreg.attacks.budgets import AutoAttackBudget


@dataclasses.dataclass
class SanityCheck:
    """One of the evaluation's sanity checks, its outcome, the value it judged and on how
    many images it ran (None: it attacked none, it reads the evaluation's results)."""

    name: str
    passed: bool
    detail: str
    value: Optional[float] = None
    images: Optional[int] = None


MASKING_CHECK = "gradient-free attack does not beat gradient attacks"
"""The name of the gradient-masking sanity check, whose share is the table's last column."""
GIVEN = "given"
"""The stage of `evaluate_autoattack` that counts adversarial examples found earlier."""


@dataclasses.dataclass
class RobustnessReport:
    """What `evaluate_robustness` measured for one model.

    Attributes:
      name: the model's name in tables and plots.
      attack_norm: "linf" or "l2".
      epsilons: the radii reported in the table.
      distances: each image's best adversarial distance (0: misclassified already;
        inf: no attack succeeded), in the order of the evaluated images.
      best_attack: which attack found it, per image ("clean", an attack name, or "none").
      attack_distances: each attack's distances, per image. With AttackBudget.warm_start
        (the default), a searched attack after the first has inf where it did not break
        the image at the best distance the earlier ones found (it did not beat them there).
      adversarial: the best adversarial example per image (the image where none).
      indices: positions of the evaluated images in the data given.
      search_tolerance: largest relative width of a final search bracket.
      checks: the sanity checks.
      lower_bounds: the L-bound per image, if computed (see metrics.LipschitzBound).
      training_time: seconds, if known.
      seconds: wall time of each attack, of the sanity checks and of the lower bound.
      top_k: the error measured: an image counts as misclassified when its label is
        outside the top k classes (1: top-1 error; ImageNet's protocol: 5).
    """

    name: str
    attack_norm: str
    epsilons: tuple
    distances: np.ndarray
    best_attack: np.ndarray
    attack_distances: dict
    adversarial: np.ndarray
    indices: np.ndarray
    search_tolerance: float
    checks: list
    lower_bounds: Optional[np.ndarray] = None
    training_time: Optional[float] = None
    seconds: dict = dataclasses.field(default_factory=dict)
    top_k: int = 1

    def error_at(self, epsilon: Optional[float] = None, images: Optional[Sequence[int]] = None,
                 **renamed: Any) -> float:
        """Fraction of images whose best adversarial distance is <= epsilon.

        Args:
          epsilon: the radius.
          images: positions in the data given (as in `indices`) to count only those of;
            None counts every evaluated image. Each must have been evaluated.
          **renamed: `eps`, the old name of `epsilon` (a DeprecationWarning).
        """
        epsilon = deprecation.renamed_keyword("RobustnessReport.error_at", renamed, "epsilon",
                                              epsilon)
        if epsilon is None:
            raise TypeError("error_at needs epsilon, the radius.")
        if images is None:
            return float(np.mean(self.distances <= epsilon))
        wanted = np.asarray(images, int)
        if not wanted.size:
            raise ValueError("images=[] names no image; pass positions from report.indices, "
                             "or None for all.")
        missing = np.setdiff1d(wanted, self.indices)
        if missing.size:
            raise ValueError(f"images holds {missing.size} position(s) this report did not "
                             f"evaluate (first: {missing[:5].tolist()}); it evaluated the "
                             f"{len(self.indices)} in report.indices.")
        return float(np.mean(self.distances[np.isin(self.indices, wanted)] <= epsilon))

    @property
    def clean_error(self) -> float:
        return float(np.mean(self.distances == 0))

    @property
    def mean_distance(self) -> float:
        return float(np.mean(self.distances))

    @property
    def median_distance(self) -> float:
        return float(np.median(self.distances))

    @property
    def success_rates(self) -> dict:
        """Per attack, the fraction of correctly classified images it broke (with
        AttackBudget.warm_start, for an attack after the first: where it matched or beat
        the earlier attacks' distance)."""
        correct = self.distances > 0
        return {name: float(np.mean(np.isfinite(d[correct]))) if correct.any() else 0.0
                for name, d in self.attack_distances.items()}

    def to_dict(self) -> dict:
        """A JSON-serialisable summary, with per-image values (inf written as None)."""

        def finite(values):
            return [float(v) if np.isfinite(v) else None for v in np.asarray(values, float)]

        return {
            "name": self.name,
            "attack_norm": self.attack_norm,
            "top_k": self.top_k,
            "num_images": int(len(self.distances)),
            "clean_error": self.clean_error,
            "error_at": {f"{epsilon:g}": self.error_at(epsilon) for epsilon in self.epsilons},
            "mean_distance": finite([self.mean_distance])[0],
            "median_distance": finite([self.median_distance])[0],
            "success_rates": self.success_rates,
            "search_tolerance": self.search_tolerance,
            "training_time_s": self.training_time,
            "seconds": self.seconds,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "images": {
                "index": [int(i) for i in self.indices],
                "distance": finite(self.distances),
                "best_attack": [str(a) for a in self.best_attack],
                "lower_bound": None if self.lower_bounds is None else finite(self.lower_bounds),
                **{f"distance_{name}": finite(d) for name, d in self.attack_distances.items()},
            },
        }


@dataclasses.dataclass
class AutoAttackReport:
    """What `evaluate_autoattack` measured for one model at one radius.

    Attributes:
      name: the model's name.
      attack_norm: "linf" or "l2".
      epsilon: the radius.
      attacks: the cascade's attacks, in order.
      broken_by: per image, "clean" (misclassified already), the attack that broke it,
        or "none" (robust).
      adversarial: per image, its verified adversarial example (the image where none).
      indices: positions of the evaluated images in the data given.
      robust_after: robust accuracy after each attack of the cascade.
      seconds: wall time of each attack.
      budget: the attacks' budgets.
    """

    name: str
    attack_norm: str
    epsilon: float
    attacks: tuple
    broken_by: np.ndarray
    adversarial: np.ndarray
    indices: np.ndarray
    robust_after: dict
    seconds: dict
    budget: AutoAttackBudget = STANDARD_BUDGET

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.broken_by != "clean"))

    @property
    def robust_accuracy(self) -> float:
        return float(np.mean(self.broken_by == "none"))

    @property
    def clean_error(self) -> float:
        return 1.0 - self.clean_accuracy

    @property
    def robust_error(self) -> float:
        """The fraction of images misclassified or broken within the radius."""
        return 1.0 - self.robust_accuracy

    def to_dict(self) -> dict:
        """A JSON-serialisable summary, with per-image results."""
        return {"name": self.name, "attack_norm": self.attack_norm, "epsilon": self.epsilon,
                "attacks": list(self.attacks), "num_images": int(len(self.broken_by)),
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "clean_error": self.clean_error, "robust_error": self.robust_error,
                "robust_after": self.robust_after, "seconds": self.seconds,
                "budget": dataclasses.asdict(self.budget),
                "images": {"index": [int(i) for i in self.indices],
                           "broken_by": [str(b) for b in self.broken_by]}}
