"""The losses attacks ascend, per example, in keras.ops: cross-entropy, the margin, DLR
and TRADES' KL divergence.

Scores come first, labels second (`loss(logits, y)`), as in `misclassification_margin`;
wrap them as `lambda y, logits: loss(logits, y)` where a Keras-style loss is wanted.
"""

from typing import Any, Optional

from keras import ops

from keras_gradreg import per_example
from keras_gradreg import validation

MARGINS = ("probability", "logit")
"""The margins of the bounds: the paper's on softmax probabilities, or on logits."""


def misclassification_margin(outputs: Any, y: Any, *, from_logits: bool = True,
                             margin: str = "probability") -> Any:
    """l(x) = max_{i != c} s_i - s_c per example: >= 0 exactly when misclassified.

    Args:
      outputs: class scores (batch, classes): logits if `from_logits`, else probabilities.
      y: integer labels, (batch,) or (batch, 1), or one-hot (batch, classes).
      from_logits: whether `outputs` are logits.
      margin: "probability" (the paper's choice: s = softmax) or "logit" (s = logits;
        for probability outputs, their logarithms, which differ from the logits by a
        per-example constant and so give the same margin).

    Returns:
      l(x), float32 (batch,).
    """
    validation.check_choice("margin", margin, MARGINS)
    outputs = ops.cast(outputs, "float32")
    if margin == "probability":
        scores = ops.softmax(outputs) if from_logits else outputs
    else:
        scores = outputs if from_logits else ops.log(outputs)
    classes = ops.shape(scores)[-1]
    labels = ops.cast(ops.reshape(per_example.integer_labels(y, scores.shape[-1]), (-1, 1)), "int32")
    true_class = ops.equal(ops.arange(classes, dtype="int32")[None, :], labels)
    true_score = ops.sum(ops.where(true_class, scores, 0.0), axis=-1)
    best_other = ops.max(ops.where(true_class, float("-inf"), scores), axis=-1)
    return best_other - true_score


def margin(logits: Any, y: Any, top_k: int = 1) -> Any:
    """max_{j != y} z_j - z_y, positive exactly when misclassified (the CW loss). Its
    maximiser in a ball crosses the nearest decision boundary, which is what a minimum
    distance needs. With `top_k` = k > 1, the k-th largest z_j (j != y) instead of the
    largest: positive exactly when y is outside the top k (the ImageNet protocol's top-5
    error)."""
    if top_k == 1:
        return misclassification_margin(logits, y, margin="logit")
    logits = ops.cast(logits, "float32")
    true_class = ops.equal(ops.arange(ops.shape(logits)[-1], dtype="int32")[None, :],
                           ops.cast(ops.reshape(per_example.integer_labels(y, logits.shape[-1]), (-1, 1)), "int32"))
    others, _ = ops.top_k(ops.where(true_class, float("-inf"), logits), top_k)
    return others[:, top_k - 1] - ops.sum(ops.where(true_class, logits, 0.0), axis=-1)


def cross_entropy(logits: Any, y: Any) -> Any:
    """The cross-entropy of integer labels y under the logits, per example, in float32."""
    return ops.sparse_categorical_crossentropy(y, ops.cast(logits, "float32"), from_logits=True)


def dlr_loss(logits: Any, y: Any, targets: Optional[Any] = None) -> Any:
    """The Difference of Logits Ratio loss, per example (higher: closer to misclassified).

    Untargeted: -(z_y - max_{i != y} z_i) / (z_(1) - z_(3)); targeted at class t:
    -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2), z_(k) the k-th largest logit (Croce &
    Hein, ICML 2020). Both are unchanged when the logits are shifted or multiplied by a
    positive number, so a saturated softmax does not hide the gradient.

    Args:
      logits: (batch, classes), at least 3 classes (4 when targeted).
      y: integer labels (batch,).
      targets: integer target classes (batch,), or None for the untargeted loss.

    Returns:
      The loss, (batch,).
    """
    logits = ops.cast(logits, "float32")
    ranked, _ = ops.top_k(logits, 3 if targets is None else 4)  # largest first
    if targets is None:
        return margin(logits, y) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    score = lambda c: ops.take_along_axis(logits, ops.reshape(c, (-1, 1)), axis=1)[:, 0]  # noqa: E731
    spread = ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2
    return (score(targets) - score(y)) / (spread + 1e-12)


def kl_divergence(reference_logits: Any, logits: Any) -> Any:
    """KL(softmax(reference) || softmax(logits)) per example: how far the prediction at
    x' has moved from the one at x (TRADES' robust term, Zhang et al., ICML 2019)."""
    reference = ops.log_softmax(reference_logits, axis=-1)
    return ops.sum(ops.exp(reference) * (reference - ops.log_softmax(logits, axis=-1)), axis=-1)
