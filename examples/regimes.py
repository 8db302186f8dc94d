"""The regimes examples/frontier.py compares the methods in (docs/frontier.md): the radius
and norm, the activation, the schedule, the grid and the radii each model is attacked at.

Every regime trains the main job's small CNN with Adam 1e-3 and batch 128; the penalty's
h is the l_inf radius in l_inf regimes and half the l2 radius in l2 ones.
"""

import dataclasses
from typing import Optional

from keras_gradreg import training
from keras_gradreg.frontier import FAST_AND_FREE
from keras_gradreg.frontier import SMALL_GRID
from keras_gradreg.frontier import Entry


@dataclasses.dataclass(frozen=True)
class Regime:
    """A setting in which the methods are compared, and how its models are judged.

    Attributes:
      description: one line for tables and plots.
      settings: the TrainConfig fields every run of the regime shares; "epsilon" and
        "attack_norm" are the radius adversarial training trains for and the evaluation's
        norm.
      epsilons: the radii every model is attacked at (the trained one among them).
      sizes: the default grid of the penalty and PGD-AT (see frontier.check_sizes).
      cheap: the single-step (and free) entries (see frontier.grid).
      seeds: the default seeds.
      num_images: the default number of AutoAttack images.
      recommended: the configuration docs/frontier.md recommends in the regime, from its
        measurements (ringed in the plot), or None before they exist.
    """

    description: str
    settings: dict
    epsilons: tuple
    sizes: dict
    cheap: tuple
    seeds: tuple = (0, 1, 2)
    num_images: int = 500
    recommended: Optional[str] = None

    @property
    def epsilon(self) -> float:
        return self.settings["epsilon"]

    @property
    def attack_norm(self) -> str:
        return self.settings["attack_norm"]

    def base(self, **changes) -> training.TrainConfig:
        """The regime's shared TrainConfig (model_dir is set per run), with `changes`."""
        return dataclasses.replace(training.TrainConfig(model_dir=""),
                                   **dict(self.settings, **changes))


def regularised(name: str, regularizer: str, weight: float) -> Entry:
    """FGSM-RS with a regulariser, as a frontier entry."""
    return Entry(f"fgsm_rs + {name} lambda={weight:g}", dict(
        method="fgsm_rs", regularizer=regularizer, regularizer_weight=weight))


FGSM_RS = Entry("fgsm_rs", dict(method="fgsm_rs"))
N_FGSM = Entry("n_fgsm", dict(method="n_fgsm"))
_LINF = dict(epsilon=0.1, attack_norm="linf", h=0.1, epochs=10, ramp_epochs=5, activation="relu")
_LINF_EPSILONS = (0.1, 0.2)
"""No smaller radius at l_inf 0.1: at 0.05 most digits survive into Square's 5,000 queries,
about 3 minutes a model on 200 digits (measured), which would triple these regimes."""
_L2 = dict(_LINF, epsilon=2.0, attack_norm="l2", h=1.0)
_FASHION = dict(_LINF, dataset="fashion_mnist", ramp_epochs=3)
FASHION_LAMBDA = 10.0
"""The penalty's lambda on Fashion-MNIST: in a 3-epoch pilot (one seed, 20-step PGD at 0.1
on 500 test images) lambda 10, 30 and 100 left 42.6, 42.0 and 40.0 % accuracy at 85.2,
81.2 and 78.4 % clean accuracy: 10 costs the least."""
_FASHION_SMOOTH = dict(_FASHION, activation="gelu")


def penalty_norm(weight: float, h: float, clean_weight: float = 0.8, every: int = 1,
                 estimator: str = "gradreg") -> Entry:
    """The unsquared penalty (penalty_power 1, Rodriguez-Munoz et al. 2024) as an entry:
    weight * epsilon * ||grad||_1, h along sign(grad), the loss weighted clean_weight;
    `estimator` "double_backprop" for its exact twin."""
    name = "gradreg" if estimator == "gradreg" else "double backprop"
    step = f" h={h:g}" if estimator == "gradreg" else ""  # double backprop takes no step
    return Entry(f"{name} power=1 lambda={weight:g} w={clean_weight:g}{step} k={every}",
                 dict(method=estimator, penalty_power=1, penalty_weight=weight, h=h,
                      clean_weight=clean_weight, penalty_every=every))


FASHION_SMOOTH_LAMBDA = 10.0
"""The squared penalty's lambda with GELU on Fashion-MNIST, from the fashion_smooth_pilot
regime (docs/frontier.md): 10, 30 and 100 left 39.2, 39.4 and 38.6 % robust error at
13.4, 16.4 and 24.8 % clean error after 3 epochs."""


_L2_GRID = {"penalty_weight": (30.0, 300.0), "penalty_every": (1, 4), "pgd_steps": (3, 7)}
_L2_CHEAP = (FGSM_RS, regularised("gradient penalty", "gradient_penalty", 1.0))

REGIMES = {
    "linf_small": Regime(
        "l_inf 0.1, ReLU, 10 epochs (the main job's setting)", _LINF, _LINF_EPSILONS,
        SMALL_GRID, FAST_AND_FREE, seeds=(0, 1), recommended="fgsm_rs"),
    "collapse": Regime(
        "l_inf 0.3, ReLU, 20 epochs, a 2-epoch radius ramp: single-step training collapses",
        dict(_LINF, epsilon=0.3, h=0.3, epochs=20, ramp_epochs=2), (0.2, 0.3, 0.4),
        {"penalty_weight": (30.0,), "penalty_every": (4,), "pgd_steps": (3, 7)},
        (FGSM_RS, N_FGSM,
         regularised("ELLE", "local_linearity", 100.0),
         regularised("ELLE", "local_linearity", 1000.0),
         regularised("ELLE-A", "adaptive_local_linearity", 1000.0),
         regularised("gradient penalty", "gradient_penalty", 10.0),
         regularised("gradient penalty", "gradient_penalty", 100.0),
         regularised("GradAlign", "grad_align", 1.0)), num_images=200,
        recommended="pgd_at 3 steps"),
    "l2": Regime("l2 2.0, ReLU, 10 epochs", _L2, (1.0, 2.0, 3.0), _L2_GRID, _L2_CHEAP,
                 num_images=200, recommended="fgsm_rs"),
    "smooth_linf": Regime("l_inf 0.1, smooth ReLU, 10 epochs",
                          dict(_LINF, activation="smooth_relu"), _LINF_EPSILONS, SMALL_GRID,
                          FAST_AND_FREE, seeds=(0, 1), num_images=200, recommended="fgsm_rs"),
    "smooth_l2": Regime("l2 2.0, smooth ReLU, 10 epochs", dict(_L2, activation="smooth_relu"),
                        (1.0, 2.0, 3.0), _L2_GRID, _L2_CHEAP, seeds=(0, 1), num_images=100,
                        recommended="fgsm_rs"),
    "fashion": Regime(
        "Fashion-MNIST, all 60,000 training images, l_inf 0.1, 10 epochs, a 3-epoch ramp",
        _FASHION, (0.1, 0.2),
        {"penalty_weight": (FASHION_LAMBDA,), "penalty_every": (1, 4), "pgd_steps": (3, 7)},
        (*(Entry(f"gradreg smooth_relu lambda={FASHION_LAMBDA:g} k={k}",
                 dict(method="gradreg", activation="smooth_relu", penalty_weight=FASHION_LAMBDA,
                      penalty_every=k)) for k in (1, 4)),
         FGSM_RS, N_FGSM, regularised("ELLE", "local_linearity", 1000.0),
         Entry("trades beta=6", dict(method="trades"))), num_images=500,
        recommended="n_fgsm"),
    "fashion_smooth": Regime(
        "Fashion-MNIST, GELU, l_inf 0.1, 10 epochs, a 3-epoch ramp: the penalty's best case",
        _FASHION_SMOOTH, (0.1, 0.2),
        {"penalty_weight": (FASHION_SMOOTH_LAMBDA,), "penalty_every": (1, 4), "pgd_steps": (3,)},
        (penalty_norm(1.2, 0.03), penalty_norm(1.2, 0.03, every=4),
         penalty_norm(1.2, 0.03, estimator="double_backprop"),
         penalty_norm(1.0, 0.1, clean_weight=1.0), FGSM_RS, N_FGSM), num_images=500,
        recommended="n_fgsm"),
    "fashion_smooth_pilot": Regime(
        "the pilot of fashion_smooth: GELU, 3 epochs, one seed: the penalty's lambda and h",
        dict(_FASHION_SMOOTH, epochs=3, ramp_epochs=1), (0.1,),
        {"penalty_weight": (10.0, 30.0, 100.0), "penalty_every": (1,), "pgd_steps": (3,)},
        tuple(penalty_norm(weight, h) for weight in (1.2, 3.0) for h in (0.01, 0.03, 0.1))
        + (penalty_norm(1.0, 0.1, clean_weight=1.0),), seeds=(0,)),
}
"""The regimes of docs/frontier.md. The fashion regime runs every method on the same small
CNN on the whole Fashion-MNIST (the penalty with ReLU and with the smooth ReLU, lazy and
not; TRADES with the paper's 10 steps and beta 6); the others, the 4,000 offline digits.
The smooth regimes use the paper's smooth ReLU
(kg.smooth_relu): with softplus this small CNN underfits in 10 epochs (measured: plain
training left 10-40 % clean error), which would compare underfit models, not
activations. They run 2 seeds, and smooth_l2 attacks 100 digits: smooth models survive
longer into Square (measured: 8 minutes to attack one penalty model of smooth_l2 on 200
digits at its three radii)."""
