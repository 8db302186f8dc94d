"""The attacks' budgets: AutoAttack's (`AutoAttackBudget`) and those of the minimum-distance
protocol's searches (`AttackBudget`), checked when made."""

import dataclasses

from keras_gradreg import validation
from keras_gradreg.attacks import pgd


@dataclasses.dataclass(frozen=True)
class AutoAttackBudget:
    """Budgets of AutoAttack's attacks; the defaults are its "standard" version.

    Attributes:
      apgd_steps: iterations of each APGD run.
      target_classes: runner-up classes APGD-T and FAB-T aim at, each in its own run.
      fab_steps: iterations of each FAB run.
      square_queries: model queries of Square per image.
    """

    apgd_steps: int = 100
    target_classes: int = 9
    fab_steps: int = 100
    square_queries: int = 5000

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = validation.check_number(f"AutoAttackBudget {field.name}",
                                            getattr(self, field.name), low=1, low_open=False,
                                            integer=True)
            object.__setattr__(self, field.name, value)


STANDARD_BUDGET = AutoAttackBudget()
"""AutoAttack's standard version's budgets (Croce & Hein 2020): what evaluate_autoattack runs."""
SEARCH_BUDGET = AutoAttackBudget(apgd_steps=20, fab_steps=20, square_queries=1000)
"""The budgets inside evaluate_robustness's search over epsilons (about 13 per image): about
the cost of CleverHans' FGM, PGD and MIM with 20 steps, and stronger
(docs/guides/evaluation.md)."""
BUDGETS = {"standard": STANDARD_BUDGET, "quick": SEARCH_BUDGET}
"""Named budgets for the scripts' --autoattack_budget: "standard" is AutoAttack's (what
to report); "quick" is SEARCH_BUDGET, for a first look at a model or for tests."""


@dataclasses.dataclass(frozen=True)
class AttackBudget:
    """Budgets of the attacks in the minimum-distance protocol; the defaults are the usual
    ones in the literature.

    Attributes:
      steps: iterations of PGD, BIM, MIM and SPSA at each radius.
      reach: how far PGD's and BIM's steps reach in all, a multiple of the radius (a step
        of min(1, reach / steps) radii; Madry et al.: 2.5).
      restarts: PGD runs from independent random starts; an image counts as broken if
        any run breaks it.
      search_steps: radii tried per image in the minimum-distance search, at most.
      search_tolerance: an image's search stops early once its bracket's relative width
        (largest failing to smallest breaking radius) is at most this; 0: never early.
      warm_start: search each attack after the first from the best distance the
        earlier ones found: it runs there first, and only the images it breaks there are
        searched below, first at (1 - WARM_BRACKET) of it. An image it cannot break
        there keeps the earlier distance, and the attack's own is recorded as inf (so
        `success_rates` then counts where each later attack matched or beat the earlier
        ones). FAB-T and CW, which minimise the distance themselves, need no start and
        always record their own. Put the attack you trust most first: it searches every
        image from the data range's width. False: every attack does.
      cw_binary_steps: Carlini-Wagner's binary search steps over its constant.
      cw_iterations: its Adam steps per constant.
      cw_learning_rate: their size.
      spsa_samples: SPSA's samples per gradient estimate.
      spsa_learning_rate: its Adam step size.
      spsa_delta: its finite-difference step.
      autoattack: the budgets of AutoAttack's attacks inside the radius search, which
        runs each at about search_steps radii: SEARCH_BUDGET by default, 20 iterations
        like PGD's rather than the fixed-radius protocol's 100; Square's queries also
        serve the gradient-masking sanity check.
    """

    steps: int = 20
    reach: float = pgd.MADRY_REACH
    restarts: int = 1
    search_steps: int = 12
    search_tolerance: float = 2.0 ** -11
    warm_start: bool = True
    cw_binary_steps: int = 5
    cw_iterations: int = 100
    cw_learning_rate: float = 0.01
    spsa_samples: int = 128
    spsa_learning_rate: float = 0.01
    spsa_delta: float = 0.01
    autoattack: AutoAttackBudget = SEARCH_BUDGET

    def __post_init__(self):
        counts = ("steps", "restarts", "search_steps", "cw_binary_steps", "cw_iterations",
                  "spsa_samples")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "warm_start":
                if not isinstance(value, bool):
                    raise ValueError(f"AttackBudget warm_start={value!r} must be True or False.")
                continue
            if field.name == "autoattack":
                if not isinstance(value, AutoAttackBudget):
                    raise ValueError(f"AttackBudget autoattack={value!r} must be an "
                                     "AutoAttackBudget.")
                continue
            rules = (dict(low=1, low_open=False, integer=True) if field.name in counts
                     else dict(low_open=False, high=1, high_open=True)
                     if field.name == "search_tolerance"
                     else {})
            value = validation.check_number(f"AttackBudget {field.name}", value, **rules)
            object.__setattr__(self, field.name, value)  # a Python number (frozen dataclass)
        if self.spsa_samples % 2:
            raise ValueError(f"AttackBudget spsa_samples={self.spsa_samples!r} must be even.")

    @property
    def pgd_step(self) -> float:
        """PGD's and BIM's step, a multiple of the radius: reach / steps, at most 1 (a
        step longer than the radius only leaves the ball to be projected back)."""
        return min(1.0, pgd.step_for_reach(self.steps, self.reach))

    def doubled(self) -> "AttackBudget":
        """The same budget with twice the iterations (a sanity check)."""
        return dataclasses.replace(self, steps=2 * self.steps)
