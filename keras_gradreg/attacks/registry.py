"""Every attack by name: the list of the attack files' specs (attacks.base.Attack), the
named sets the protocols default to, and `make_attack`, the one place where an attack is
built and compiled for a model (once per model, attack, budget and input shape), on any
Keras backend. Adding an attack is its file and a line here."""

from concurrent import futures
import importlib
import os
from typing import Any, Callable

import keras
import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg import validation
from keras_gradreg.attacks import apgd
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import fab
from keras_gradreg.attacks import pgd
from keras_gradreg.attacks import square
from keras_gradreg.attacks.base import Attack
from keras_gradreg.attacks.budgets import AttackBudget
from keras_gradreg.attacks.judge import Judge


def _cleverhans(name: str) -> Callable:
    """The builder of CleverHans' attack `name`, importing CleverHans (and TensorFlow)
    when an evaluation first builds it (attacks.cleverhans)."""

    def build(*args):
        return importlib.import_module("keras_gradreg.attacks.cleverhans").build(name, *args)

    return build


_TENSORFLOW = ("tensorflow",)
_CLEVERHANS = (
    Attack("fgm", "CleverHans' fast gradient method on the margin loss", _cleverhans("fgm"),
           backends=_TENSORFLOW),
    Attack("bim", "CleverHans' basic iterative method on the margin loss", _cleverhans("bim"),
           backends=_TENSORFLOW),
    Attack("mim", "CleverHans' momentum iterative method (cross-entropy)", _cleverhans("mim"),
           backends=_TENSORFLOW),
    Attack("cw", "CleverHans' Carlini-Wagner L2, mended for Keras 3", _cleverhans("cw"),
           norms=("l2",), minimises_distance=True, backends=_TENSORFLOW, compiled=False),
    Attack("spsa", "CleverHans' SPSA, mended for Keras 3", _cleverhans("spsa"), norms=("linf",),
           gradient_free=True, backends=_TENSORFLOW, compiled=False),
)
ATTACKS = {attack.name: attack for attack in (
    pgd.PGD, *_CLEVERHANS, apgd.APGD_CE, apgd.APGD_DLR, apgd.APGD_T, fab.FAB_T, square.SQUARE)}
"""Every attack the evaluations run, by name: the library's own in keras.ops (every
backend), CleverHans' (TensorFlow)."""
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
    here = keras.backend.backend()
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
        if here not in ATTACKS[name].backends:
            raise ValueError(
                f"Attack {name!r} runs on the {', '.join(ATTACKS[name].backends)} backend; Keras "
                f"runs on {here!r}, where the attacks are "
                f"{tuple(n for n in known if here in ATTACKS[n].backends)}.")
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


def _budget_of(spec: Attack, budget: AttackBudget) -> Any:
    """The budget an attack takes: the AutoAttackBudget of AutoAttack's, else `budget`."""
    return budget.autoattack if spec.autoattack else budget


def _core(spec: Attack, judge: Judge, budget: AttackBudget) -> Callable:
    """The attack's core built on the judge's model and compiled by the backend, once per
    model (kept in `judge.cache`), attack, budget, norm, data range and top-k."""
    key = (spec.name, judge.model_fn, judge.attack_norm, _budget_of(spec, budget),
           judge.clip_min, judge.clip_max, judge.top_k)
    cache = judge.cache if judge.cache is not None else {}
    if key not in cache:
        core = spec.build(judge.model_fn, _budget_of(spec, budget), judge.attack_norm,
                          judge.clip_min, judge.clip_max, judge.top_k)
        cache[key] = backend.current().compiled(core) if spec.compiled else core
    return cache[key]


PADDINGS = ("buckets", "multiple", "none")
"""How a backend pads an attack's batches (`backend.*.PADDING`, see padded_size)."""


def padded_size(n: int, batch_size: int, multiple: int = 1, padding: str = "buckets") -> int:
    """The size a batch of n images is padded to before a compiled attack runs on it.

    "buckets" (JAX, which compiles once per shape): the smallest of 1, 2, 3, 4, 6, 8, 12,
    16, 24, ... (2^k and 3 * 2^(k-2)) that holds n, at most `batch_size` (a multiple of it
    beyond): two shapes per doubling, so a cascade's shrinking batches compile a few
    times, and at most a third of a batch is padding (padding every batch to
    `batch_size` made 5 images cost 128). "multiple" (TensorFlow, whose graphs take any
    size but whose fused kernels compile per shape): n rounded up to a multiple of
    `multiple`, an attack's `batch_multiple`. "none" (eager PyTorch): n.
    """
    validation.check_choice("padding", padding, PADDINGS)
    if padding == "none":
        return n
    if padding == "multiple":
        return -(-n // multiple) * multiple
    if n > batch_size:
        return -(-n // batch_size) * batch_size
    power = 1 << max(n - 1, 0).bit_length()  # the smallest power of two >= n
    return min(3 * power // 4 if power >= 4 and n <= 3 * power // 4 else power, batch_size)


MIN_PART = 16
"""The fewest images of a part of an attack's batch (`batch_parts`)."""


def batch_parts(n: int) -> int:
    """How many parts an attack's batch of n images runs in at once, each in a thread:
    where the backend splits batches (`backend.*.SPLITS_BATCHES`) and sees no GPU, one per
    CPU core available, parts of MIN_PART images at least; else one."""
    here = backend.current()
    if not here.SPLITS_BATCHES or here.has_gpu():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, n // MIN_PART))


def _runner(spec: Attack, judge: Judge, budget: AttackBudget, seed: int) -> Callable:
    """f(x, y, epsilon, targets, draw) -> x_adv on NumPy batches: the compiled core on the
    batch in the parts it runs in at once (`batch_parts`, each part in a thread), each padded (`padded_size`: its last image repeated) as the backend wants,
    with its draws: image i's from the stateless seed (seed, draw, i), the same on every
    backend and however the batch is split."""
    core = _core(spec, judge, budget)
    here = backend.current()

    def run_part(x, y, epsilon, targets, draw, part):
        size = padded_size(len(part), judge.batch_size, spec.batch_multiple or 1, here.PADDING)
        rows = part[np.minimum(np.arange(size), len(part) - 1)]
        rngs = [np.random.default_rng([seed, draw, int(i)]) for i in rows]
        draws = spec.draws(rngs, x[rows], _budget_of(spec, budget), judge.attack_norm)
        args = [x[rows].astype(np.float32), y[rows].astype(np.int32),
                np.asarray(epsilon, np.float32)[rows], targets[rows].astype(np.int32), *draws]
        found = core(*[ops.convert_to_tensor(a) if spec.compiled else a for a in args])
        return np.asarray(ops.convert_to_numpy(found))[:len(part)]

    def run(x, y, epsilon, targets, draw):
        parts = np.array_split(np.arange(len(x)), batch_parts(len(x)))
        if len(parts) == 1:
            return run_part(x, y, epsilon, targets, draw, parts[0])
        with futures.ThreadPoolExecutor(len(parts)) as pool:
            return np.concatenate(list(pool.map(
                lambda part: run_part(x, y, epsilon, targets, draw, part), parts)))

    return run


def make_attack(name: str, judge: Judge, budget: AttackBudget = AttackBudget(),
                seed: int = 0) -> Callable:
    """Attack `name` as f(x, y, epsilon) -> x_adv on NumPy batches, epsilon one radius per
    image (inf for an attack that minimises the distance itself).

    The core is compiled once per model, attack and budget (see `_core`). Targeted
    attacks run once per runner-up class, each run only on the images not yet broken
    within epsilon (with epsilon = inf, an attack that minimises the distance runs every
    target on every image and keeps each image's closest example). A deterministic
    attack (FAB-T) remembers each image's runs: a later call on the same image (a larger
    epsilon of the cascade) runs only the target classes not run yet, and breaks within
    its epsilon exactly the images a fresh attack would.

    Args:
      name: a key of ATTACKS.
      judge: the model as the attacks see it, its data range and norm.
      budget: the budgets (AutoAttack's attacks use `budget.autoattack`).
      seed: seeds the attack's random draws (restarts, starts, queries).
    """
    spec = ATTACKS[name]
    run = _runner(spec, judge, budget, seed)
    if not spec.targeted:
        return lambda x, y, epsilon: run(np.asarray(x, np.float32), np.asarray(y, np.int64),
                                         epsilon, np.asarray(y, np.int64), 0)
    return _Targeted(spec, judge, budget, run)


class _Targeted:
    """A targeted attack's rounds over the runner-up classes (see make_attack)."""

    def __init__(self, spec: Attack, judge: Judge, budget: AttackBudget, run: Callable):
        self.spec, self.judge, self.budget, self.run = spec, judge, budget, run
        self.remembered = {}  # image and label bytes -> (targets run, closest example, size)

    def __call__(self, x, y, epsilon):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
        epsilon = np.asarray(epsilon, np.float32)
        judge, spec = self.judge, self.spec
        logits = ops.convert_to_numpy(judge.model_fn(x))
        rounds = min(self.budget.autoattack.target_classes, logits.shape[1] - 1)
        targets = runner_up_classes(logits, y, rounds)
        best, distance = x.copy(), np.full(len(x), np.inf)
        start = np.zeros(len(x), int)  # the first round each image still has to run
        keys = [x[i].tobytes() + y[i].tobytes() for i in range(len(x))] if spec.deterministic else []
        for i, key in enumerate(keys):
            if key in self.remembered:
                start[i], best[i], distance[i] = self.remembered[key]
        within = lambda size, eps: ball.within_epsilon(  # noqa: E731
            size, eps, judge.attack_norm, x.shape[1:], judge.clip_min, judge.clip_max)
        todo = ~(np.isfinite(distance) & within(distance, epsilon))
        for r in range(rounds):
            idx = np.flatnonzero(todo & (start <= r))
            if not len(idx):
                continue
            found = self.run(x[idx], y[idx], epsilon[idx], targets[idx, r], r)
            wrong, size = judge.verify(found, x[idx], y[idx])
            closer = (wrong & (size < distance[idx])) if spec.minimises_distance else (wrong | (r == 0))
            best[idx[closer]] = found[closer]
            distance[idx[closer & wrong]] = size[closer & wrong]
            start[idx] = r + 1
            todo[idx] = ~(wrong & within(size, epsilon[idx]) & np.isfinite(epsilon[idx]))
        for i, key in enumerate(keys):
            self.remembered[key] = (start[i], best[i], distance[i])
        return best
