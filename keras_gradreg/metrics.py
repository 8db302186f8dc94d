"""Lower bounds on the adversarial distance (Finlay & Oberman, 2019), as Keras metrics.

With the misclassification loss l(x) = max_{i != c} s_i(x) - s_c(x) (s the softmax
probabilities, or the logits) an image is misclassified once l >= 0, and

    L-bound:  ||v|| >= max(-l(x), 0) / L
    C-bound:  ||v||_2 >= (-||g||_2 + sqrt(||g||_2^2 + 2 C max(-l(x), 0))) / C

where g = grad_x l(x), L is the largest dual-norm gradient ||grad_x l||_* over the
evaluated images (an empirical Lipschitz constant) and C the largest top eigenvalue of
the input Hessian of l over them. These are the paper's bounds: empirical, not
certificates (L and C are estimated on the data, not maximised over the input space).

Because L and C are maxima over the whole evaluation set, a metric keeps one
(gap, gradient norm[, curvature], weight) record per image and computes its result from
all of them: after `evaluate`, the value does not depend on the batch size, the batch
order or the number of replicas.
"""

from typing import Any, NamedTuple, Optional

import keras
import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg import deprecation
from keras_gradreg import metric_inputs
from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.attacks import ball
from keras_gradreg.attacks.losses import MARGINS
from keras_gradreg.attacks.losses import misclassification_margin
DEFAULT_CURVATURE_ITERATIONS = 20
"""Lanczos steps per image for the top Hessian eigenvalue (see top_hessian_eigenvalue)."""

DEFAULT_MAX_IMAGES = 100_000
"""Images one metric can hold between resets (400 kB of float32 per record field)."""


class BoundTerms(NamedTuple):
    """Per-image quantities the bounds are made of, each of shape (batch,)."""

    gap: Any  # max(-l(x), 0): how far the image is from misclassification
    grad_norm: Any  # ||grad_x l(x)||_*, dual of the attack norm
    curvature: Optional[Any]  # top eigenvalue of the input Hessian of l, or None


def _hessian_vector_product(loss_at, x: Any, v: Any) -> Any:
    """Per-example H v for the per-example losses loss_at(x), x and v of shape (batch, N):
    the gradient of grad . v, both taken by the backend (double backprop)."""

    def slope(points):
        _, _, gradient = backend.value_and_gradient(lambda p: (loss_at(p), None), points)
        return ops.sum(gradient * v, axis=1), None

    return backend.value_and_gradient(slope, x)[2]


def top_hessian_eigenvalue(loss_at, x: Any, start: Any, iterations: int) -> Any:
    """Largest (most positive) eigenvalue of each example's input Hessian, by Lanczos.

    `iterations` Lanczos steps with full reorthogonalisation build, for every example,
    a tridiagonal matrix whose largest eigenvalue converges to the Hessian's largest
    from below, fast at the ends of the spectrum (negative eigenvalues of larger
    magnitude do not get in the way, as they would in power iteration). It holds
    iterations x batch x N floats. Hessian-vector products are exact (double backprop),
    so the model needs twice-differentiable activations (softplus, tanh, smooth_relu);
    with ReLU the Hessian is zero almost everywhere.

    Args:
      loss_at: function (batch, N) -> (batch,) of per-example losses; examples must not
        interact (inference mode).
      x: the points, (batch, N).
      start: starting vectors, (batch, N), not orthogonal to the top eigenvector.
      iterations: Lanczos steps (at most N are useful: an exhausted space stops early).

    Returns:
      (batch,) eigenvalues.
    """
    def step(j, state):
        basis, alphas, betas, v, alive, used = state
        basis = ops.scatter_update(basis, [[j]], v[None])
        w = ops.stop_gradient(_hessian_vector_product(loss_at, x, v))
        alpha = ops.where(alive, ops.sum(w * v, axis=1), 0.0)
        # full reorthogonalisation against every basis vector so far (twice, for safety)
        for _ in range(2):
            w = w - ops.einsum("kb,kbn->bn", ops.einsum("bn,kbn->kb", w, basis), basis)
        beta = ops.sqrt(ops.sum(ops.square(w), axis=1))
        scale = ops.max(ops.abs(alphas), axis=0) + ops.abs(alpha)
        alive_next = alive & (beta > 1e-5 * scale)  # breakdown, relative to rounding
        alphas = ops.scatter_update(alphas, [[j]], alpha[None])
        betas = ops.scatter_update(betas, [[j]], ops.where(alive_next, beta, 0.0)[None])
        used = ops.scatter_update(used, [[j]], alive[None])
        v = ops.where(alive_next[:, None], w / ops.maximum(beta, 1e-30)[:, None], 0.0)
        return basis, alphas, betas, v, alive_next, used

    norm = ops.sqrt(ops.sum(ops.square(start), axis=1, keepdims=True))
    v0 = ops.divide_no_nan(start, norm)
    steps = ops.zeros((iterations,) + tuple(ops.shape(x)[:1]), x.dtype)
    alive = ops.ones(ops.shape(x)[:1], "bool")
    state = (ops.zeros((iterations,) + tuple(ops.shape(x)), x.dtype), steps, steps, v0, alive,
             ops.zeros((iterations,) + tuple(ops.shape(x)[:1]), "bool"))
    _, alphas, betas, _, _, used = ops.fori_loop(0, iterations, step, state)
    alphas, betas, used = ops.transpose(alphas), ops.transpose(betas), ops.transpose(used)
    # Steps taken after the space was exhausted form a diagonal block of their own; put
    # its entries below every eigenvalue of the real block (Gershgorin), so they add
    # nothing near the top, without the huge numbers that would spoil the eigenvalues.
    floor = -(ops.max(ops.abs(alphas), axis=1) + 2.0 * ops.max(betas, axis=1)) - 1.0
    alphas = ops.where(used, alphas, floor[:, None])
    off = ops.pad(betas[:, :-1], ((0, 0), (0, 1)))  # entry i couples steps i and i + 1
    eye = lambda k: ops.eye(iterations, k=k, dtype=x.dtype)[None]  # noqa: E731
    tridiagonal = (alphas[:, :, None] * eye(0) + off[:, :, None] * eye(1)
                   + off[:, None, :] * eye(-1))
    return ops.max(ops.eigh(tridiagonal)[0], axis=1)


def bound_terms(
    model: Any,
    x: Any,
    y: Any,
    *,
    attack_norm: str,
    from_logits: bool = True,
    margin: str = "probability",
    curvature_iterations: int = 0,
) -> BoundTerms:
    """Computes each image's gap, gradient norm and (optionally) curvature, in inference mode.

    Args:
      model: a Keras classifier, called as `model(x, training=False)`.
      x: a batch of inputs (a tensor or a nest of tensors).
      y: integer or one-hot labels.
      attack_norm: "linf" or "l2"; the gradient is measured in its dual.
      from_logits: whether the model outputs logits (else probabilities).
      margin: "probability" or "logit".
      curvature_iterations: if > 0, also estimate each image's top Hessian eigenvalue
        with that many Lanczos steps.

    Returns:
      BoundTerms of float32 (batch,) tensors.
    """
    ball.check_norm(attack_norm)
    flat_x = [per_example.as_float(t) for t in keras.tree.flatten(x)]
    flat = per_example.flatten(flat_x)

    def loss_at(points):
        inputs = keras.tree.pack_sequence_as(x, per_example.unflatten(points, flat_x))
        outputs = model(inputs, training=False)
        return misclassification_margin(outputs, y, from_logits=from_logits, margin=margin)

    loss, _, gradient = backend.value_and_gradient(lambda points: (loss_at(points), None), flat)
    loss, gradient = ops.stop_gradient(loss), ops.cast(ops.stop_gradient(gradient), "float32")
    grad_norm = per_example.dual_norm(gradient, attack_norm)
    curvature = None
    if curvature_iterations > 0:
        dims = ops.cast(ops.shape(gradient)[1], "float32")
        start = ball.ascent_direction(gradient, "l2") + ops.rsqrt(dims)
        curvature = top_hessian_eigenvalue(loss_at, flat, ops.cast(start, flat.dtype),
                                           curvature_iterations)
        curvature = ops.cast(curvature, "float32")
    return BoundTerms(ops.maximum(-loss, 0.0), grad_norm, curvature)


def lipschitz_bound(gap: Any, lipschitz: Any) -> Any:
    """The L-bound gap / L per image (inf where L = 0 < gap, 0 where gap = 0)."""
    gap = ops.convert_to_tensor(gap, "float32")
    lipschitz = ops.cast(lipschitz, "float32")
    return ops.where(gap > 0, gap / lipschitz, 0.0)


def curvature_bound(gap: Any, grad_norm: Any, curvature: Any) -> Any:
    """The C-bound per image, written 2 gap / (||g|| + sqrt(||g||^2 + 2 C gap)).

    That form equals the paper's (-||g|| + sqrt(||g||^2 + 2 C gap)) / C without its
    cancellation for small C, and tends to gap / ||g|| as C -> 0. A negative C (the loss
    is concave everywhere it was measured) is replaced by 0, which keeps the bound valid.
    """
    gap = ops.convert_to_tensor(gap, "float32")
    grad_norm = ops.convert_to_tensor(grad_norm, "float32")
    curvature = ops.maximum(ops.cast(curvature, "float32"), 0.0)
    root = ops.sqrt(ops.square(grad_norm) + 2.0 * curvature * gap)
    return ops.where(gap > 0, 2.0 * gap / (grad_norm + root), 0.0)


class _DistanceBound(keras.metrics.Metric):
    """Shared machinery of LipschitzBound and CurvatureBound."""

    _kind = ""
    needs_model_inputs = True

    def __init__(
        self,
        attack_norm: str = per_example.DEFAULT_ATTACK_NORM,
        epsilon: Optional[float] = None,
        *,
        from_logits: bool = True,
        margin: str = "probability",
        max_images: int = DEFAULT_MAX_IMAGES,
        curvature_iterations: int = 0,
        name: Optional[str] = None,
        dtype: Any = None,
    ):
        ball.check_norm(attack_norm)
        validation.check_choice("margin", margin, MARGINS)
        if epsilon is not None:
            epsilon = validation.check_number("epsilon", epsilon, low_open=False,
                                              hint="(or None for the mean bound)")
        max_images = validation.check_number("max_images", max_images, low=1, low_open=False,
                                             integer=True)
        if name is None:
            name = f"{self._kind}_bound_{attack_norm}" + ("" if epsilon is None else f"_ge_{epsilon:g}")
        super().__init__(name=name, dtype=dtype)
        self.attack_norm, self.epsilon, self.from_logits = attack_norm, epsilon, from_logits
        self.margin, self.max_images = margin, max_images
        self.curvature_iterations = curvature_iterations
        fields = ["weight", "gap", "grad_norm"] + (["curvature"] if curvature_iterations else [])
        # One slot more than max_images: images past the end are written there and
        # counted in `dropped`, so the guard holds where out-of-range writes would be
        # dropped silently (XLA, GPUs) and asserts do not stop the step.
        self._records = {
            field: self.add_variable((max_images + 1,), "zeros", dtype="float32", name=field)
            for field in fields
        }
        self._count = self.add_variable((), "zeros", dtype="int32", name="count")
        self._dropped = self.add_variable((), "zeros", dtype="int32", name="dropped")

    @classmethod
    def from_config(cls, config: dict) -> "_DistanceBound":
        return cls(**deprecation.upgrade_config(cls.__name__, config))

    def update_state(self, y_true, y_pred=None, sample_weight=None):
        """Called by GradRegModel's compiled metrics in evaluation; needs its model and inputs."""
        if not metric_inputs.fed():
            raise ValueError(
                f"{type(self).__name__} needs the model and its inputs, which a plain Keras "
                "model does not pass to metrics: compile it into a keras_gradreg.GradRegModel, "
                "or call update_from_model(model, x, y) in your own loop."
            )
        model, x, cache = metric_inputs.fed()[-1]
        if model is None:  # a training step: bounds are computed in evaluation only
            return
        key = (self.attack_norm, self.from_logits, self.margin, self.curvature_iterations)
        if key not in cache:  # metrics of one step share their gradients
            cache[key] = bound_terms(
                model, x, y_true, attack_norm=self.attack_norm, from_logits=self.from_logits,
                margin=self.margin, curvature_iterations=self.curvature_iterations,
            )
        self.update_from_terms(cache[key], sample_weight)

    def update_from_model(self, model: Any, x: Any, y: Any, sample_weight: Any = None) -> None:
        """Adds a batch, for custom training or evaluation loops."""
        with metric_inputs.model_inputs(model, x):
            self.update_state(y, None, sample_weight)

    def update_from_terms(self, terms: BoundTerms, sample_weight: Any = None) -> None:
        """Records one batch of per-image terms (see bound_terms)."""
        weight = ops.ones_like(ops.cast(terms.gap, "float32"))
        if sample_weight is not None:
            weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        n = ops.shape(weight)[0]
        replicas, index = backend.current().replica_position()
        # Replica r writes its k-th image to slot k * replicas + r: the replicas' records
        # never collide, and summing them across replicas (on read) gives their union.
        slots = (self._count.value + ops.arange(n, dtype="int32")) * replicas + index
        kept = slots < self.max_images
        slots = ops.where(kept, slots, self.max_images)
        values = {"weight": weight, "gap": terms.gap, "grad_norm": terms.grad_norm,
                  "curvature": terms.curvature}
        for field, variable in self._records.items():
            variable.assign(ops.scatter_update(variable.value, slots[:, None],
                                               ops.cast(values[field], "float32")))
        self._count.assign(self._count.value + ops.cast(n, "int32"))
        self._dropped.assign(self._dropped.value + ops.sum(1 - ops.cast(kept, "int32")))

    def _bounds(self) -> tuple:
        """(bound, weight) of every slot; unused slots have weight 0 (static shapes, for XLA)."""
        records = {field: ops.convert_to_tensor(v)[:self.max_images]
                   for field, v in self._records.items()}
        weight = records["weight"]
        used = weight > 0
        largest = {field: ops.max(ops.where(used, records[field], 0.0))
                   for field in ("grad_norm", "curvature") if field in records}
        if self._kind == "lipschitz":
            bounds = lipschitz_bound(records["gap"], largest["grad_norm"])
        else:  # curvature_bound replaces a negative C by 0 anyway
            bounds = curvature_bound(records["gap"], records["grad_norm"], largest["curvature"])
        return ops.where(used, bounds, 0.0), weight

    def per_image_bounds(self) -> tuple:
        """(bounds, weights) over the recorded images, with the dataset-wide L or C, as
        NumPy arrays.

        Raises:
          ValueError: more images were given than max_images since the last reset.
        """
        dropped = int(ops.convert_to_numpy(self._dropped.value))
        if dropped:
            raise ValueError(
                f"{self.name} holds at most max_images={self.max_images} images and "
                f"{dropped} more were given since the last reset; pass a larger max_images.")
        bounds, weight = (ops.convert_to_numpy(t) for t in self._bounds())
        return bounds[weight > 0], weight[weight > 0]

    def result(self):
        """The mean bound (or the fraction >= epsilon); NaN if images were dropped."""
        bounds, weight = self._bounds()
        if self.epsilon is not None:
            bounds = ops.cast(bounds >= self.epsilon, "float32")
        value = ops.divide_no_nan(ops.sum(weight * bounds), ops.sum(weight))
        return ops.where(self._dropped.value > 0, np.nan, value)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(attack_norm=self.attack_norm, epsilon=self.epsilon,
                      from_logits=self.from_logits, margin=self.margin,
                      max_images=self.max_images)
        return config


@keras.saving.register_keras_serializable(package="keras_gradreg")
class LipschitzBound(_DistanceBound):
    """The paper's L-bound on the adversarial distance, as a Keras metric.

    Its result is the mean over the images seen since the last reset of
    max(-l(x), 0) / L (with `epsilon=None`), or the fraction of images whose bound is
    >= `epsilon`, L being the largest ||grad_x l||_* over those images.

    Use it in `GradRegModel.compile(metrics=[LipschitzBound("linf"),
    LipschitzBound("linf", epsilon=0.1)])`: it then appears in the `evaluate` and
    validation logs, History and TensorBoard, computed in inference mode (not in the
    training logs: L is a maximum over a fixed model, which changes within an epoch). With a plain model or in a
    custom loop, call `update_from_model(model, x, y)` per batch and `result()`.

    Args:
      attack_norm: "linf" or "l2" (the gradient is measured in its dual).
      epsilon: None for the mean bound, or a distance for the fraction bounded above it.
      **kwargs: `from_logits` (whether the model outputs logits, default True),
        `margin` ("probability", the paper's, or "logit"), `max_images` (how many images
        one evaluation may hold; past that the result is NaN and `per_image_bounds`
        raises), `name` and `dtype` (as for any Keras metric).
    """

    _kind = "lipschitz"

    def __init__(self, attack_norm: str = "linf", epsilon: Optional[float] = None, **kwargs):
        if "curvature_iterations" in kwargs:  # would compute a curvature and never use it
            raise ValueError("LipschitzBound takes no curvature_iterations; that is CurvatureBound's.")
        super().__init__(attack_norm, epsilon, **kwargs)


@keras.saving.register_keras_serializable(package="keras_gradreg")
class CurvatureBound(_DistanceBound):
    """The paper's C-bound on the l2 adversarial distance, as a Keras metric.

    As LipschitzBound, with (-||g|| + sqrt(||g||^2 + 2 C gap)) / C per image, C being the
    largest top Hessian eigenvalue of l over the images, each estimated by
    `curvature_iterations` Lanczos steps on exact Hessian-vector products: 2 *
    iterations extra backward passes per batch. Use twice-differentiable activations
    (softplus, `smooth_relu`).

    Args:
      epsilon: as for LipschitzBound.
      curvature_iterations: Lanczos steps, > 0.
      **kwargs: `from_logits`, `margin`, `max_images`, `name` and `dtype`, as for
        LipschitzBound.
    """

    _kind = "curvature"

    def __init__(self, epsilon: Optional[float] = None, *,
                 curvature_iterations: int = DEFAULT_CURVATURE_ITERATIONS, **kwargs):
        attack_norm = kwargs.pop("attack_norm", "l2")
        if isinstance(epsilon, str) or attack_norm != "l2":
            wrong = f"attack_norm={attack_norm!r}" if attack_norm != "l2" else f"{epsilon!r}"
            raise ValueError(
                f"CurvatureBound got {wrong}: it is an l2 bound only (its first argument is "
                "epsilon); for l_inf use LipschitzBound('linf').")
        curvature_iterations = validation.check_number(
            "curvature_iterations", curvature_iterations, low=1, low_open=False, integer=True)
        super().__init__("l2", epsilon, curvature_iterations=curvature_iterations, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(curvature_iterations=self.curvature_iterations)
        return config
