"""AutoAttack's standard cascade on each Keras backend and the official AutoAttack, on the
same saved model and images: what `benchmark.py --evaluation --evaluations=backends` times.

Each measurement runs in a process of its own (`run`: KERAS_BACKEND set before Keras
starts). `measure` is that process: it loads the .keras file, attacks the images at the
radius and reports the seconds, which images stayed robust and, on PyTorch (eager: every
model call is a pass), the model passes per image with and without an input gradient.
The official AutoAttack (Croce & Hein's code, the `pyautoattack` package) runs on the
PyTorch backend, where a Keras model is a `torch.nn.Module`: the same weights, the images
transposed to the NCHW layout it expects.
"""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np

import keras_gradreg as kg

RUNS = ("tensorflow", "jax", "torch", "official")
"""Ours on each backend, then the official AutoAttack (on PyTorch)."""


def _count_passes(model: keras.Model) -> dict:
    """Counts the images the model is called on, with and without an input gradient
    (PyTorch: a tensor that requires grad), by wrapping this instance's `call`."""
    counts = {"forward": 0, "gradient": 0}
    call = model.call

    def counted(inputs, *args, **kwargs):
        watched = getattr(inputs, "requires_grad", False)
        counts["gradient" if watched else "forward"] += int(inputs.shape[0])
        return call(inputs, *args, **kwargs)

    model.call = counted
    return counts


def _official(model: keras.Model, x: np.ndarray, y: np.ndarray, epsilon: float) -> np.ndarray:
    """The official AutoAttack's adversarial examples (NHWC), standard version, l_inf."""
    import pyautoattack
    import torch

    class Transposed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model(images.permute(0, 2, 3, 1))

    adversary = pyautoattack.AutoAttack(Transposed().eval(), norm="Linf", eps=epsilon,
                                        version="standard", seed=0)
    adversarial, _ = adversary.run_standard_evaluation(
        torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long(),
        batch_size=len(x))
    return adversarial.permute(0, 2, 3, 1).detach().numpy()


def measure(run: str, path: str, x: np.ndarray, y: np.ndarray, epsilon: float) -> dict:
    """One run's seconds, robust flags per image and (PyTorch) passes per image."""
    model = kg.layers.load_model(path)
    counts = _count_passes(model) if keras.backend.backend() == "torch" else None
    start = time.perf_counter()
    if run == "official":
        adversarial = _official(model, x, y, epsilon)
        seconds = time.perf_counter() - start
        logits = keras.ops.convert_to_numpy(model.predict(adversarial, verbose=0))
        inside = np.max(np.abs(adversarial - x).reshape(len(x), -1), axis=1) <= epsilon + 1e-6
        robust = (logits.argmax(axis=1) == y) | ~inside
    else:
        report, = kg.evaluate_autoattack(model, x, y, epsilons=epsilon, num_images=len(x),
                                         verbose=0)
        seconds = time.perf_counter() - start
        robust = np.asarray(report.broken_by) == "none"
    result = {"run": run, "backend": keras.backend.backend(), "seconds": seconds,
              "robust": robust.tolist()}
    if counts is not None:
        result.update({f"{k}_passes_per_image": v / len(x) for k, v in counts.items()})
    return result


def run(runs, path: str, num_images: int, epsilon: float) -> list:
    """Each run in a process of its own, one after the other; their `measure` results."""
    results = []
    for name in runs:
        backend = "torch" if name == "official" else name
        print(f"{name}: AutoAttack on {num_images} images at {epsilon:g} (a minute or more)",
              flush=True)
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), name, path, str(num_images), str(epsilon)],
            env=dict(os.environ, KERAS_BACKEND=backend), capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(f"the {name} run failed:\n{child.stderr[-3000:]}")
        results.append(json.loads(child.stdout.splitlines()[-1]))
    return results


def print_table(results: list, epsilon: float) -> None:
    """Seconds, robust error, speed against the official run, images it broke that a run
    left robust, passes per image."""
    official = next((r for r in results if r["run"] == "official"), None)
    rows = []
    for r in results:
        robust = np.array(r["robust"])
        missed = "-" if official is None else str(int(np.sum(robust & ~np.array(official["robust"]))))
        speed = "-" if official is None else f"{official['seconds'] / r['seconds']:.2f}"
        passes = (f"{r['forward_passes_per_image']:.0f} / {r['gradient_passes_per_image']:.0f}"
                  if "forward_passes_per_image" in r else "as on torch")
        rows.append([r["run"], f"{r['seconds']:.1f}", f"{100 * (1 - robust.mean()):.1f}", speed,
                     missed, passes])
    print(kg.evaluation.render_table(
        f"AutoAttack (standard) at {epsilon:g}, l_inf, {len(results[0]['robust'])} images",
        ["run", "seconds", "% robust error", "x official's speed",
         "broken by the official only", "passes per image (forward / with gradient)"], rows))


if __name__ == "__main__":
    name, path, num_images, epsilon = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    images, labels = kg.datasets.load_offline_mnist()[1]  # the main job's test digits
    images, labels = images[:num_images].astype(np.float32), labels[:num_images].astype(np.int64)
    print(json.dumps(measure(name, path, images, labels, epsilon)))
