"""The sanity checks of Carlini et al. (2019): they fire on gradient masking, stay quiet
otherwise, and attack only their subset."""

import warnings

import pytest

from helpers import FAST
from helpers import GRADIENT_FREE
from helpers import ON_TENSORFLOW
from helpers import evaluation_problem
from helpers import quantised
import keras_gradreg as kg


def _masked_model():
    """Rounds its input to 4 levels: zero gradients everywhere, a gradient-masking model."""
    model, x, y, _, _ = evaluation_problem(seed=5)
    return quantised(model, 4), x, y


def test_sanity_checks_fire_on_a_gradient_masking_model():
    model, x, y = _masked_model()
    with pytest.warns(UserWarning, match="Sanity check"):
        report = kg.evaluate_robustness(model, x, y, attacks=("pgd", GRADIENT_FREE), epsilons=(0.1, 0.3),
                                        budget=FAST, lower_bound=False, verbose=0)
    failed = {c.name for c in report.checks if not c.passed}
    assert "gradient-free attack does not beat gradient attacks" in failed
    if ON_TENSORFLOW:  # SPSA does not break every image at radius 1; Square does
        assert "unbounded attack succeeds" in failed


def test_square_flags_gradient_masking_when_no_gradient_free_attack_runs_and_the_table_says_so():
    model, x, y = _masked_model()
    with pytest.warns(UserWarning, match="Sanity check 'gradient-free attack"):
        report = kg.evaluate_robustness(model, x, y, attacks=("pgd",), epsilons=(0.1, 0.3),
                                        budget=FAST, lower_bound=False, verbose=0)
    check = next(c for c in report.checks if c.name == kg.evaluation.MASKING_CHECK)
    assert not check.passed and check.value > kg.evaluation.GRADIENT_FREE_SHARE
    assert check.detail.startswith("square broke")
    assert f"{100 * check.value:.1f} FAILED" in kg.format_table([report])
    assert set(report.seconds) == {"pgd", "sanity_checks"} and min(report.seconds.values()) > 0


def test_sanity_checks_stay_quiet_on_a_plain_model():
    model, x, y, _, _ = evaluation_problem(seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = kg.evaluate_robustness(model, x, y, epsilons=(0.05, 0.1, 0.2), budget=FAST,
                                        lower_bound=False, verbose=0)
    assert report.checks and all(c.passed for c in report.checks)
    assert kg.evaluation.MASKING_CHECK in {c.name for c in report.checks}  # Square ran


@pytest.mark.every_backend
def test_the_checks_attack_only_their_subset_and_say_on_how_many_images(monkeypatch):
    """The PGD checks run on the first CHECK_IMAGES images and Square only on correctly
    classified ones among them; a masking model still fails the masking check."""
    model, x, y = _masked_model()
    monkeypatch.setattr(kg.evaluation.sanity, "CHECK_IMAGES", 10)
    calls = []
    make_attack = kg.attacks.registry.make_attack

    def counted(name, *args, **kwargs):
        attack = make_attack(name, *args, **kwargs)

        def run(images, labels, epsilon):
            calls.append((name, len(images)))
            return attack(images, labels, epsilon)

        return run

    monkeypatch.setattr(kg.attacks.registry, "make_attack", counted)
    with pytest.warns(UserWarning, match="Sanity check 'gradient-free attack"):
        report = kg.evaluate_robustness(model, x, y, attacks=("pgd",), epsilons=(0.1, 0.3),
                                        budget=FAST, lower_bound=False, verbose=0)
    checks = {c.name: c for c in report.checks}
    correct = int((report.distances[:10] > 0).sum())
    assert checks["error grows with epsilon"].images == 10
    assert checks["doubling PGD steps changes little"].images == 10
    assert "on 10 images" in checks["doubling PGD steps changes little"].detail
    masking = checks[kg.evaluation.MASKING_CHECK]
    assert masking.images == correct and f"of the {correct} correctly" in masking.detail
    assert 0 < sum(n for name, n in calls if name == "square") <= correct
    assert masking.value > kg.evaluation.GRADIENT_FREE_SHARE and not masking.passed
    assert checks["unbounded attack succeeds"].images is None
