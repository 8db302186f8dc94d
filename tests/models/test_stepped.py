"""SteppedModel, the contract every training model steps on: what a skipped step reports,
and the targets fit refuses before any work."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from helpers import batch
from helpers import linear_classifier

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
MODELS = {
    "gradreg": lambda: kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2"),
    "adversarial": lambda: kg.AdversarialTrainingModel.from_model(linear_classifier(),
                                                                  epsilon=0.1, attack="fgsm_rs"),
}


@pytest.mark.every_backend
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_skipped_step_reports_nan_not_a_perfect_loss(kind):
    """A batch with a NaN pixel updates nothing; train_on_batch says so: the loss (and the
    step's own logs) NaN, skipped_steps 1, rather than the 0.0 of an empty mean."""
    model = MODELS[kind]()
    model.compile(keras.optimizers.SGD(0.1), CE)
    x, y = batch()
    x[3, 1] = np.nan
    before = [np.array(w) for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isnan(logs["loss"]) and logs["skipped_steps"] == 1.0
    assert all(np.isnan(logs[name]) for name in model.STEP_LOGS if name in logs)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    good = model.train_on_batch(*batch(), return_dict=True)
    assert np.isfinite(good["loss"]) and good["skipped_steps"] == 0.0


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_labels_that_are_not_numbers_are_refused_before_training(kind):
    model = MODELS[kind]()
    model.compile(keras.optimizers.SGD(0.1), CE)
    x, _ = batch()
    with pytest.raises(ValueError, match="Labels of dtype <U3 are not class indices"):
        model.fit(x, np.array(["cat", "dog"] * 4), verbose=0)
    assert int(model.optimizer.iterations) == 0


class _KeptLogs(keras.callbacks.Callback):
    """Keeps each batch's logs unread, as an async callback may read them late (and in
    any order: Keras may run async-safe callbacks on a thread pool)."""

    async_safe = True

    def __init__(self):
        super().__init__()
        self.logs = {}

    def on_train_batch_end(self, batch, logs=None):
        self.logs[batch] = logs

    def on_test_batch_end(self, batch, logs=None):
        self.logs[batch] = logs


@pytest.mark.every_backend
@pytest.mark.parametrize("kind,run", [("gradreg", "fit"), ("gradreg", "evaluate"),
                                      ("adversarial", "fit")])  # (its evaluation is Keras')
def test_each_batchs_logs_stay_that_batchs_after_the_next_steps(kind, run):
    """Read after the whole run, batch 0's logs still say batch 0 was finite: later steps
    do not update them in place (NonFiniteGuard names the batch from them)."""
    x, y = batch(n=8)
    x[5, 2] = np.nan  # batch 1 of 2
    model = MODELS[kind]()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    kept = _KeptLogs()
    kwargs = dict(shuffle=False) if run == "fit" else {}
    where = "training" if run == "fit" else "evaluation"
    with pytest.raises(FloatingPointError, match=f"{where} batch 1"):
        getattr(model, run)(x, y, batch_size=4, verbose=0, callbacks=[kept], **kwargs)
    assert [float(kept.logs[b]["skipped_steps"]) for b in sorted(kept.logs)] == [0.0, 1.0]
