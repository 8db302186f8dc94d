"""The lp ball against closed forms, on both backends: norms, steps, projections, random
starts, radii and "within the radius"."""

from keras import ops
import numpy as np
import pytest

from keras_gradreg.attacks import ball

pytestmark = pytest.mark.every_backend


def _x(n=6, shape=(3, 4), seed=0):
    return np.random.default_rng(seed).uniform(size=(n,) + shape)


def test_norms_are_per_example():
    t = _x() - 0.5
    np.testing.assert_allclose(ops.convert_to_numpy(ball.norm(t, "linf")),
                               np.abs(t).reshape(6, -1).max(1))
    np.testing.assert_allclose(ops.convert_to_numpy(ball.norm(t, "l2")),
                               np.linalg.norm(t.reshape(6, -1), axis=1))


def test_ascent_directions_are_sign_and_unit_l2_with_zero_for_a_zero_gradient():
    g = _x() - 0.5
    g[0] = 0.0
    np.testing.assert_array_equal(ops.convert_to_numpy(ball.ascent_direction(g, "linf")),
                                  np.sign(g))
    d = ops.convert_to_numpy(ball.ascent_direction(g, "l2"))
    np.testing.assert_allclose(np.linalg.norm(d.reshape(6, -1), axis=1), [0] + [1] * 5, rtol=1e-12)
    np.testing.assert_allclose(d[1:], g[1:] / np.linalg.norm(g[1:].reshape(5, -1), axis=1)[:, None, None])


def test_a_step_is_step_size_times_epsilon():
    x, g = _x(), _x(seed=1) - 0.5
    np.testing.assert_allclose(ops.convert_to_numpy(ball.ascend(x, g, 0.2, 1.25, "linf")),
                               x + 0.25 * np.sign(g))


def test_linf_projection_is_the_box_within_the_range():
    x, far = _x(), _x(seed=1) * 3 - 1
    got = ops.convert_to_numpy(ball.project(far, x, 0.1, "linf", 0.0, 1.0))
    np.testing.assert_allclose(got, np.clip(np.clip(far, x - 0.1, x + 0.1), 0, 1))


def test_l2_projection_scales_the_perturbation_to_the_radius_and_keeps_those_inside():
    x = np.full((2, 3, 4), 0.5)
    delta = np.zeros((2, 3, 4))
    delta[0, 0, 0], delta[0, 1, 1] = 0.3, 0.4  # norm 0.5: scaled to 0.25
    delta[1, 2, 3] = 0.1  # inside: kept
    got = ops.convert_to_numpy(ball.project(x + delta, x, 0.25, "l2", 0.0, 1.0)) - x
    np.testing.assert_allclose(got[0], delta[0] / 2, atol=1e-12)
    np.testing.assert_allclose(got[1], delta[1], atol=1e-12)


@pytest.mark.parametrize("attack_norm", ball.NORMS)
def test_random_starts_are_inside_the_ball_and_a_function_of_the_seed(attack_norm):
    shape = (2000, 2, 2)
    draw = lambda seed: ops.convert_to_numpy(ball.uniform_in_ball(  # noqa: E731
        shape, 0.3, attack_norm, np.array(seed, np.int32), "float64"))
    first = draw([1, 2])
    np.testing.assert_array_equal(draw([1, 2]), first)
    assert not np.allclose(draw([1, 3]), first)
    radius = ops.convert_to_numpy(ball.norm(first, attack_norm))
    assert radius.max() <= 0.3 + 1e-12
    if attack_norm == "l2":  # uniform in the volume: (r / epsilon)^n ~ U[0, 1], n = 4 entries
        assert abs(np.mean((radius / 0.3) ** 4) - 0.5) < 0.03
    else:  # each entry uniform in [-epsilon, epsilon]
        assert abs(np.mean(first) / 0.3) < 0.02 and abs(np.mean(np.abs(first)) / 0.3 - 0.5) < 0.02


def test_seed_streams_are_independent_draws():
    seed = np.array([3, 7], np.int32)
    np.testing.assert_array_equal(ops.convert_to_numpy(ball.seed_stream(seed, 0)), seed)
    one = ops.convert_to_numpy(ball.seed_stream(seed, 1))
    assert one[1] == 7 and one[0] == 3 + ball.SEED_STREAM


def test_max_epsilon_is_the_diameter_of_the_range():
    assert ball.max_epsilon("linf", 0.0, 1.0, 784) == 1.0
    assert ball.max_epsilon("l2", 0.0, 1.0, 784) == pytest.approx(28.0)


def test_an_unknown_ball_norm_is_named():
    with pytest.raises(ValueError, match="attack_norm='l1'"):
        ball.project(np.zeros((1, 2)), np.zeros((1, 2)), 0.1, "l1", 0.0, 1.0)


@pytest.mark.parametrize("attack_norm", ["linf", "l2"])
def test_a_radius_per_example_projects_each_example_onto_its_own_ball(attack_norm):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, size=(3, 4, 4, 1)).astype("float32")
    x_adv = x + rng.normal(size=x.shape).astype("float32")
    radii = np.array([0.05, 0.2, 1.5], "float32")
    one_by_one = np.concatenate([
        ops.convert_to_numpy(ball.project(x_adv[i:i + 1], x[i:i + 1], float(r), attack_norm,
                                                0.0, 1.0)) for i, r in enumerate(radii)])
    for epsilon in (radii, radii.reshape(3, 1, 1, 1)):
        got = ops.convert_to_numpy(ball.project(x_adv, x, epsilon, attack_norm, 0.0, 1.0))
        np.testing.assert_allclose(got, one_by_one, rtol=1e-6, atol=1e-7)
    size = ops.convert_to_numpy(ball.norm(got - x, attack_norm))
    assert np.all(size <= radii * (1 + 1e-6))


@pytest.mark.parametrize("attack_norm", ball.NORMS)
def test_starts_on_the_sphere_have_the_radius_and_a_radius_per_example(attack_norm):
    radii = np.array([0.1, 0.2, 0.4])
    got = ops.convert_to_numpy(ball.on_sphere((3, 4, 4, 1), radii, attack_norm,
                                              np.array([1, 0], np.int32), "float64"))
    np.testing.assert_allclose(ops.convert_to_numpy(ball.norm(got, attack_norm)), radii,
                               rtol=1e-12)
    inside = ops.convert_to_numpy(ball.uniform_in_ball((3, 4, 4, 1), radii, attack_norm,
                                                       np.array([1, 0], np.int32), "float64"))
    assert np.all(ops.convert_to_numpy(ball.norm(inside, attack_norm)) <= radii + 1e-12)


def test_radii_are_checked_against_the_data_range_in_their_norm():
    assert ball.check_epsilons(["0.1", 0.3], "linf") == (0.1, 0.3)  # as flags give them
    assert ball.check_epsilon(2.0, "l2", size=784) == 2.0
    for bad, norm, match in [(1.5, "linf", "epsilon=1.5.*an l2 radius needs attack_norm='l2'"),
                             (30.0, "l2", "epsilon=30.0.*l2 diameter of the data range, 28"),
                             ("abc", "linf", "epsilon='abc'"), (float("nan"), "linf", "epsilon=nan"),
                             (0.0, "linf", "epsilon=0.0")]:
        with pytest.raises(ValueError, match=match):
            ball.check_epsilon(bad, norm, size=784)
    with pytest.raises(ValueError, match="repeats a radius"):
        ball.check_epsilons([0.1, 0.1], "linf")
    with pytest.raises(ValueError, match="names no radius"):
        ball.check_epsilons([], "linf")


def test_within_the_radius_allows_float32_rounding_and_nothing_more():
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    spacing = float(np.spacing(np.float32(1.0)))
    size = np.array([0.1 * (1 + 5e-6), 0.1 * (1 + 5e-5)])
    np.testing.assert_array_equal(ball.within_epsilon(size, 0.1, "linf", x.shape[1:], 0.0, 1.0),
                                  [True, False])
    l2 = np.array([1.0 + 0.5 * spacing * 28, 1.0 + 1e-4])
    np.testing.assert_array_equal(ball.within_epsilon(l2, 1.0, "l2", x.shape[1:], 0.0, 1.0),
                                  [True, False])
    np.testing.assert_allclose(ball.perturbation_size(x + 0.25, x, "linf"), [0.25, 0.25])
