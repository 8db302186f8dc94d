"""Every attack by name: the one table of what each supports, the named sets the
protocols default to, and `make_attack`, the one place where an attack is built and
compiled for a model (once per model, attack, budget and input shape)."""

import dataclasses
import threading
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.attacks import apgd
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import fab
from keras_gradreg.attacks import judge as judge_lib
from keras_gradreg.attacks import losses
from keras_gradreg.attacks import pgd
from keras_gradreg.attacks import square
from keras_gradreg.attacks.judge import Judge
from keras_gradreg.attacks.budgets import AttackBudget


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """What an attack supports.

    Attributes:
      description: what it is, with its source.
      norms: the norms it attacks in.
      autoattack: one of AutoAttack's attacks (Croce & Hein, ICML 2020): its budget is an
        AutoAttackBudget, and the AutoAttack protocol (the cascade) can run it.
      cleverhans: run by CleverHans 4.0.0 (imported when first asked for).
      targeted: runs once per runner-up class.
      gradient_free: queries the model's outputs only.
      minimises_distance: finds a small distance itself, so the minimum-distance protocol
        runs it once, without a search over radii.
      min_classes: the fewest classes of a model it can attack.
      images_only: needs (batch, height, width, channels) inputs.
      any_top_k: can push the label out of the top k classes for any k (top-5 error);
        the others aim at top-1 misclassification only (a DLR ratio, a target class).
    """

    description: str
    norms: tuple = ball.NORMS
    autoattack: bool = False
    cleverhans: bool = False
    targeted: bool = False
    gradient_free: bool = False
    minimises_distance: bool = False
    min_classes: int = 2
    images_only: bool = False
    any_top_k: bool = False


ATTACKS = {
    "pgd": AttackSpec("PGD on the margin loss from a random start (Madry et al. 2018)",
                      any_top_k=True),
    "fgm": AttackSpec("CleverHans' fast gradient method on the margin loss", cleverhans=True),
    "bim": AttackSpec("CleverHans' basic iterative method on the margin loss", cleverhans=True),
    "mim": AttackSpec("CleverHans' momentum iterative method (cross-entropy)", cleverhans=True),
    "cw": AttackSpec("CleverHans' Carlini-Wagner L2, mended for Keras 3", norms=("l2",),
                     cleverhans=True, minimises_distance=True),
    "spsa": AttackSpec("CleverHans' SPSA, mended for Keras 3", norms=("linf",), cleverhans=True,
                       gradient_free=True),
    "apgd_ce": AttackSpec("APGD on the cross-entropy", autoattack=True, any_top_k=True),
    "apgd_dlr": AttackSpec("APGD on the untargeted DLR loss", autoattack=True, min_classes=3),
    "apgd_t": AttackSpec("APGD on the targeted DLR loss", autoattack=True, targeted=True,
                         min_classes=4),
    "fab_t": AttackSpec("FAB, targeted", autoattack=True, targeted=True,
                        minimises_distance=True),
    "square": AttackSpec("the Square Attack (Andriushchenko et al. 2020)", autoattack=True,
                         gradient_free=True, images_only=True, any_top_k=True),
}
"""Every attack the evaluations run, by name."""

SETS = {
    "minimum_distance": ("apgd_ce", "apgd_dlr", "fab_t"),
    "autoattack": ("apgd_ce", "apgd_dlr", "fab_t", "square"),
    "standard": ("apgd_ce", "apgd_t", "fab_t", "square"),
    "top_k": ("apgd_ce", "pgd"),
}
"""Named sets of attacks, in the order they run. "minimum_distance": the paper's protocol's
default (AutoAttack's gradient attacks in a search over epsilons: as cheap as
CleverHans' FGM, PGD and MIM and stronger, docs/guides/evaluation.md);
"autoattack": those and Square; "standard": AutoAttack's standard cascade (RobustBench);
"top_k": the minimum-distance protocol's default for top-k error, k > 1 (ImageNet's
top-5): the gradient attacks whose loss and success test take any k."""


def resolve(attacks: Any, attack_norm: str, default: str, autoattack_only: bool = False,
            top_k: int = 1) -> tuple:
    """The attacks to run, by name, or a ValueError naming a bad one.

    Args:
      attacks: names, a key of SETS, or None for SETS[default] (SETS["top_k"] when
        top_k > 1).
      attack_norm: "linf" or "l2".
      default: the key of SETS that None stands for.
      autoattack_only: allow AutoAttack's attacks only (the cascade).
      top_k: the error measured: top-1, or the label outside the top k (only the attacks
        with `any_top_k` then).
    """
    ball.check_norm(attack_norm)
    known = tuple(n for n, spec in ATTACKS.items() if spec.autoattack or not autoattack_only)
    if attacks is None:
        names = SETS["top_k" if top_k > 1 else default]
    elif isinstance(attacks, str):
        if attacks not in SETS:
            raise ValueError(f"attacks={attacks!r} is not a set of attacks; use one of "
                             f"{tuple(SETS)} or a list of names from {known}.")
        names = SETS[attacks]
    elif not len(attacks):
        raise ValueError(f"attacks={attacks!r} must be a non-empty list of names from {known}.")
    else:
        names = tuple(attacks)
    for name in names:
        validation.check_choice("attack", name, known)
        if attack_norm not in ATTACKS[name].norms:
            raise ValueError(f"Attack {name!r} does not support attack_norm={attack_norm!r} (it "
                             f"supports {ATTACKS[name].norms}).")
        if top_k > 1 and not ATTACKS[name].any_top_k:
            raise ValueError(
                f"Attack {name!r} aims at top-1 misclassification; with top_k={top_k} use "
                f"{tuple(n for n, spec in ATTACKS.items() if spec.any_top_k and n in known)}.")
    return tuple(names)


def check_runs_on(name: str, num_classes: int, image_rank: int) -> None:
    """A ValueError if attack `name` cannot run on a model with that many classes, or on
    inputs of that rank (batch axis included)."""
    spec = ATTACKS[name]
    if num_classes < spec.min_classes:
        raise ValueError(f"Attack {name!r} needs at least {spec.min_classes} classes (its DLR "
                         f"loss ranks the logits); the model has {num_classes}.")
    if spec.images_only and image_rank != 4:
        raise ValueError(f"Attack {name!r} needs images of shape (batch, height, width, "
                         f"channels); got inputs of rank {image_rank}.")


def runner_up_classes(logits: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest-scoring classes other than the label, best first, (batch, count)."""
    scores = np.array(logits, np.float64)
    scores[np.arange(len(y)), y] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :count]


_NEW_GRAPH = threading.Lock()
"""Held while an attack's graph is chosen and, when new, traced (not run): batches attacked
at the same time (evaluation.progress.in_batches) trace each graph once, one at a time."""


def traced_per_image_shape(fn: Callable, *extra: tf.TensorSpec,
                           cache: Optional[dict] = None, key: Any = None) -> Callable:
    """fn(x, y, epsilon, *extra) as a tf.function traced at most twice per image shape: x
    float32 (batch, ...), y int64 (batch,), epsilon float32 (batch,) radii, then the `extra`
    arguments. The first batch size met gets a graph of its own (a graph for a known
    batch size ran 10 % faster: APGD and Square, small CNN, 2 CPU cores), every other
    size shares one graph for any size, so the shrinking batches of a radius search or a
    cascade do not trace again.

    Args:
      fn: the function to compile.
      *extra: the specs of its arguments after epsilon.
      cache: where the graphs live, under `key` (everything fn's graph depends on): a
        dict that lasts as long as the model, so that every evaluation of it reuses
        them (see judge.compiled_for); None: this function's own.
      key: fn's key in `cache`.
    """
    traced = {} if cache is None else cache.setdefault(key, {})

    def call(x, y, epsilon, *args):
        with _NEW_GRAPH:
            graphs = traced.setdefault(tuple(x.shape[1:]), {})
            batch = len(x) if not graphs or len(x) in graphs else None
            if batch not in graphs:
                graph = tf.function(fn, input_signature=[
                    tf.TensorSpec((batch,) + tuple(x.shape[1:]), tf.float32),
                    tf.TensorSpec((batch,), tf.int64), tf.TensorSpec((batch,), tf.float32),
                    *extra])
                # TensorFlow counts traces per Python function across all models, and an
                # attack called a few times a model (Square in the checks, the cascade's
                # later stages) traces on most calls with every new model: a false alarm
                # here, where each graph traces once (see backend.PRIVATE_KERAS_APIS)
                graph._omit_frequent_tracing_warning = True
                graph.get_concrete_function()  # traced here, under the lock
                graphs[batch] = graph
            graph = graphs[batch]
        return graph(x, y, epsilon, *args)

    return call


def _graph(name: str, model_fn: Callable, attack_norm: str, budget: AttackBudget,
           clip_min: float, clip_max: float, top_k: int) -> Callable:
    """Attack `name` as a TensorFlow function f(x, y, epsilon, targets, seed)."""
    autoattack = budget.autoattack
    common = dict(attack_norm=attack_norm, clip_min=clip_min, clip_max=clip_max)
    if name.startswith("apgd"):
        return lambda x, y, epsilon, targets, seed: apgd.apgd(
            model_fn, x, y, epsilon, loss="ce" if name == "apgd_ce" else "dlr",
            targets=targets if name == "apgd_t" else None, steps=autoattack.apgd_steps, seed=seed,
            top_k=top_k, **common)
    if name == "fab_t":
        return lambda x, y, epsilon, targets, seed: fab.fab(
            model_fn, x, y, targets=targets, steps=autoattack.fab_steps, **common)
    if name == "square":
        return lambda x, y, epsilon, targets, seed: square.square(
            model_fn, x, y, epsilon, queries=autoattack.square_queries, seed=seed, top_k=top_k, **common)
    if name == "pgd":
        def restarted(x, y, epsilon, targets, seed):
            best = x
            for restart in range(budget.restarts):
                candidate = pgd.pgd(
                    model_fn, lambda labels, logits: losses.margin(logits, labels, top_k), x, y,
                    epsilon, steps=budget.steps, step_size=budget.pgd_step,
                    seed=ball.seed_stream(tf.stack([seed, 0]), restart), **common)
                fooled = judge_lib.fooled(model_fn(candidate), y, top_k)
                best = tf.where(per_example.broadcast(fooled, x), candidate, best)
            return best

        return restarted
    from keras_gradreg.attacks import cleverhans  # imported when first asked for

    attack = cleverhans.rescaled_attack(name, model_fn, budget, **common)
    return lambda x, y, epsilon, targets, seed: attack(x, y, epsilon)


def _padded(idx: np.ndarray, multiple: int) -> np.ndarray:
    """idx with its last entry repeated up to a multiple of `multiple` entries."""
    return np.concatenate([idx, np.repeat(idx[-1:], -len(idx) % multiple)])


def make_attack(name: str, judge: Judge, budget: AttackBudget = AttackBudget(),
                seed: int = 0) -> Callable:
    """Attack `name` as f(x, y, epsilon) -> x_adv on NumPy batches, epsilon one radius per image
    (inf for an attack that minimises the distance itself).

    The graph is traced at most twice per image shape (see `traced_per_image_shape`) and
    kept with the model (`judge.cache`). APGD-T and FAB-T run once per runner-up class,
    each run only on the images not yet broken within epsilon (with epsilon = inf, FAB-T runs
    every target on every image and keeps each image's closest example). FAB-T, which
    neither depends on epsilon nor draws at random, remembers each image's runs: a later call
    on the same image (a larger radius of the cascade) runs only the target classes not
    run yet, and breaks within its radius exactly the images a fresh attack would.

    Args:
      name: a key of ATTACKS.
      judge: the model as the attacks see it, its data range and norm.
      budget: the budgets (AutoAttack's attacks use `budget.autoattack`).
      seed: seeds the attack's random draws (restarts, starts, queries).
    """
    spec = ATTACKS[name]
    attack_norm, clip_min, clip_max = judge.attack_norm, judge.clip_min, judge.clip_max
    if name in ("cw", "spsa"):  # one call per batch (CW) or per image (SPSA), not traced
        from keras_gradreg.attacks import cleverhans  # imported when first asked for

        return cleverhans.untraced_attack(name, judge.model_fn, budget, clip_min, clip_max)
    key_budget = budget.autoattack if spec.autoattack else budget
    run = traced_per_image_shape(
        _graph(name, judge.model_fn, attack_norm, budget, clip_min, clip_max, judge.top_k),
        tf.TensorSpec((None,), tf.int64),  # targets
        tf.TensorSpec((), tf.int32),  # seed
        cache=judge.cache,
        key=(name, judge.model_fn, attack_norm, key_budget, clip_min, clip_max, judge.top_k))

    def untargeted(x, y, epsilon):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
        return np.asarray(run(x, y, np.asarray(epsilon, np.float32), y, np.int32(seed)))

    if not spec.targeted:
        return untargeted
    remembered = {}  # FAB-T: image and label bytes -> (targets run, closest example, its size)

    def targeted(x, y, epsilon):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
        epsilon = np.asarray(epsilon, np.float32)
        logits = np.asarray(judge.model_fn(x))
        rounds = min(budget.autoattack.target_classes, logits.shape[1] - 1)
        targets = runner_up_classes(logits, y, rounds)
        best = x.copy()
        distance = np.full(len(x), np.inf)
        start = np.zeros(len(x), int)  # the first round each image still has to run
        keys = [x[i].tobytes() + y[i].tobytes() for i in range(len(x))] if name == "fab_t" else []
        for i, key in enumerate(keys):
            if key in remembered:
                start[i], best[i], distance[i] = remembered[key]
        todo = ~(np.isfinite(distance)
                 & ball.within_epsilon(distance, epsilon, attack_norm, x.shape[1:], clip_min, clip_max))
        for r in range(rounds):
            idx = np.flatnonzero(todo & (start <= r))
            if not len(idx):
                continue
            padded = _padded(idx, fab.BATCH_MULTIPLE if name == "fab_t" else 1)
            found = np.asarray(run(x[padded], y[padded], epsilon[padded], targets[padded, r],
                                   np.int32(seed + r)))[:len(idx)]
            wrong, size = judge.verify(found, x[idx], y[idx])
            closer = (wrong & (size < distance[idx])) if name == "fab_t" else (wrong | (r == 0))
            best[idx[closer]] = found[closer]
            distance[idx[closer & wrong]] = size[closer & wrong]
            start[idx] = r + 1
            todo[idx] = ~(wrong & ball.within_epsilon(size, epsilon[idx], attack_norm, x.shape[1:],
                                                     clip_min, clip_max)
                          & np.isfinite(epsilon[idx]))
        for i, key in enumerate(keys):
            remembered[key] = (start[i], best[i], distance[i])
        return best

    return targeted
