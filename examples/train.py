"""Trains one model: plain, with the finite-difference penalty (or its double-backprop
twin), or adversarially (PGD, FGSM-RS, N-FGSM, free, TRADES; the first three optionally
with a regulariser against catastrophic overfitting).

    python examples/train.py --method=gradreg --attack_norm=linf --penalty_weight=1 --model_dir=runs/gr

The model is saved as MODEL_DIR/model.keras with its training time, TensorBoard logs in
MODEL_DIR/logs and the epoch history in MODEL_DIR/history.csv. If the process is killed,
the same command resumes from the last completed epoch.

On several machines (JAX backend; every machine has the data, process 0 writes model_dir):

    KERAS_BACKEND=jax python examples/train.py --strategy=data_parallel \
        --coordinator_address=HOST0:1234 --num_processes=2 --process_id=I --model_dir=runs/gr

FGSM-RS with the local-linearity regulariser (ELLE), no radius ramp:

    python examples/train.py --method=fgsm_rs --epsilon=0.3 --ramp_epochs=0 \
        --regularizer=local_linearity --regularizer_weight=100 --model_dir=runs/elle

The paper's CIFAR-10 experiment is one command of examples/reproduce.py
(--experiment=paper_cifar10).
"""

from absl import app
from absl import flags

import keras_gradreg as kg
import shared_flags
from keras_gradreg import training
from keras_gradreg import validation

shared_flags.define_training_flags()
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    with validation.exit_on_bad_value("train.py"):
        config = training.check_config(shared_flags.training_config())
        training.check_model_dir(config)  # a finished run or other settings there
    _, history, seconds = training.train(config)
    last = {k: round(v[-1], 4) for k, v in history.history.items()} if history.history else {}
    penalised = ""
    if config.method in ("gradreg", "double_backprop"):
        dual = kg.DUAL_NORMS[config.attack_norm]
        penalised = (f"penalised the squared {dual} norm of the input gradient (against "
                     f"{config.attack_norm}); ")
    print(f"trained in {seconds:.1f} s; {penalised}last epoch: {last}")


if __name__ == "__main__":
    app.run(main)
