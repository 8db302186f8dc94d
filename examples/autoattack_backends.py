"""AutoAttack's standard cascade on each Keras backend and the official AutoAttack, on the
same saved model and images: what `benchmark.py --evaluation --evaluations=backends` times.

Each measurement runs in a process of its own (`run`: KERAS_BACKEND set before Keras
starts). `measure` is that process: it loads the .keras file, attacks the images at the
radius and reports the seconds, which images stayed robust and, on PyTorch (eager: every
model call is a pass), the model passes per image of each attack, with and without an
input gradient. The official AutoAttack (Croce & Hein's code, the `pyautoattack`
package) attacks what its users attack: a plain `torch.nn.Module`, here built from the
Keras model's weights (`torch_module`: its convolutions and dense layers, NCHW), checked
to give the Keras model's logits before it is timed.
"""

import json
import logging
import os
import subprocess
import sys
import time

import keras
import numpy as np

import keras_gradreg as kg

RUNS = ("tensorflow", "jax", "torch", "official")
"""Ours on each backend, then the official AutoAttack (PyTorch, a plain torch module)."""
STAGES = {"apgd": "apgd_ce", "apgd_targeted": "apgd_t", "fab": "fab_t", "square": "square"}
"""The official AutoAttack's attack objects, by our names of the attacks they run."""
_RESULT = "RESULT "
"""The child's line that carries its measurement (progress bars print above it)."""


class Passes(logging.Handler):
    """Counts the images a model is called on, per stage of the cascade, with and without
    an input gradient (PyTorch: an input that requires grad). As a logging handler on the
    cascade's logger it learns the stage our cascade starts (it logs each one)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.stage, self.counts = "checks", {}

    def emit(self, record):
        self.stage = record.args[0]

    def wrap(self, call):
        """`call` counted under the current stage."""

        def counted(inputs, *args, **kwargs):
            kind = "gradient" if getattr(inputs, "requires_grad", False) else "forward"
            counts = self.counts.setdefault(self.stage, {"forward": 0, "gradient": 0})
            counts[kind] += int(inputs.shape[0])
            return call(inputs, *args, **kwargs)

        return counted


def _same_padding(size: int, kernel: int, stride: int) -> tuple:
    """Keras' "same" padding of one axis: (before, after), the odd pixel after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def torch_module(model: keras.Model, image_shape: tuple):
    """A plain torch.nn.Module with the Keras model's weights, on NCHW images: Conv2D
    ("same" or "valid" padding), Flatten and Dense layers with relu or no activation, in
    order; any other layer is refused by name."""
    import torch
    from torch.nn import functional

    steps, shape = [], tuple(image_shape)
    for layer in model.layers:
        kind = type(layer).__name__
        act = getattr(getattr(layer, "activation", None), "__name__", "linear")
        if kind == "InputLayer":
            continue
        if kind not in ("Conv2D", "Dense", "Flatten") or act not in ("relu", "linear"):
            raise ValueError(f"torch_module converts Conv2D, Flatten and Dense layers with relu or "
                             f"no activation; the model has {layer.name!r} ({kind}, {act}).")
        weights = [torch.from_numpy(np.asarray(keras.ops.convert_to_numpy(w)))
                   for w in layer.weights]
        if kind == "Conv2D":
            (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
            pad = ((*_same_padding(shape[1], kw, sw), *_same_padding(shape[0], kh, sh))
                   if layer.padding == "same" else (0, 0, 0, 0))
            kernel = weights[0].permute(3, 2, 0, 1).contiguous()
            steps.append(lambda x, k=kernel, b=weights[1], p=pad, s=(sh, sw):
                         functional.conv2d(functional.pad(x, p), k, b, stride=s))
        elif kind == "Flatten":  # Keras flattens channels last
            steps.append(lambda x: x.permute(0, 2, 3, 1).flatten(1) if x.ndim == 4 else x)
        else:
            steps.append(lambda x, w=weights[0].T.contiguous(), b=weights[1]:
                         functional.linear(x, w, b))
        if act == "relu":
            steps.append(functional.relu)
        shape = tuple(layer.compute_output_shape((1, *shape))[1:])

    class Plain(torch.nn.Module):
        def forward(self, images):
            for step in steps:
                images = step(images)
            return images

    return Plain().eval()


def _official(module, x: np.ndarray, y: np.ndarray, epsilon: float, passes: Passes,
              seconds: dict) -> np.ndarray:
    """The official AutoAttack's adversarial examples (NHWC), standard version, l_inf, on
    the plain module, its passes counted and its seconds added up (`seconds`) per attack."""
    import pyautoattack
    import torch

    adversary = pyautoattack.AutoAttack(module, norm="Linf", eps=epsilon, version="standard",
                                        seed=0)
    for attribute, stage in STAGES.items():
        attack = getattr(adversary, attribute)

        def perturb(*args, perturb=attack.perturb, stage=stage, **kwargs):
            passes.stage, start = stage, time.perf_counter()
            try:
                return perturb(*args, **kwargs)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start

        attack.perturb = perturb
    adversarial, _ = adversary.run_standard_evaluation(
        torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long(),
        batch_size=len(x))
    return adversarial.permute(0, 2, 3, 1).detach().numpy()


def measure(run: str, path: str, x: np.ndarray, y: np.ndarray, epsilon: float) -> dict:
    """One run's seconds (in all and per attack), robust flags per image and (PyTorch)
    passes per image of each attack."""
    model = kg.layers.load_model(path)
    passes, stages = Passes(), {}
    counted = keras.backend.backend() == "torch"
    if run == "official":
        module = torch_module(model, x.shape[1:])
        mine = module(keras.ops.convert_to_tensor(x[:16]).permute(0, 3, 1, 2))
        if not np.allclose(mine.detach().numpy(), keras.ops.convert_to_numpy(model(x[:16])),
                           atol=1e-4):
            raise ValueError("torch_module's logits differ from the Keras model's.")
        module.forward = passes.wrap(module.forward)
        start = time.perf_counter()
        adversarial = _official(module, x, y, epsilon, passes, stages)
        seconds = time.perf_counter() - start
        logits = keras.ops.convert_to_numpy(model.predict(adversarial, verbose=0))
        inside = np.max(np.abs(adversarial - x).reshape(len(x), -1), axis=1) <= epsilon + 1e-6
        robust = (logits.argmax(axis=1) == y) | ~inside
    else:
        if counted:
            model.call = passes.wrap(model.call)
        logging.getLogger("keras_gradreg.evaluation.cascade").addHandler(passes)
        start = time.perf_counter()
        report, = kg.evaluate_autoattack(model, x, y, epsilons=epsilon, num_images=len(x),
                                         verbose=1)
        seconds = time.perf_counter() - start
        robust = np.asarray(report.broken_by) == "none"
        stages = dict(report.seconds)
    result = {"run": run, "backend": keras.backend.backend(), "seconds": seconds,
              "seconds_per_attack": stages, "robust": robust.tolist()}
    if counted:
        result["passes_per_image"] = {stage: {k: v / len(x) for k, v in c.items()}
                                      for stage, c in passes.counts.items()}
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
        line = next(l for l in child.stdout.splitlines()[::-1] if l.startswith(_RESULT))
        results.append(json.loads(line[len(_RESULT):]))
    return results


def print_table(results: list, epsilon: float) -> None:
    """Seconds (in all and per attack), robust error, speed against the official run and
    images it broke that a run left robust; then the passes per image of each attack,
    where they were counted."""
    official = next((r for r in results if r["run"] == "official"), None)
    rows = []
    for r in results:
        robust = np.array(r["robust"])
        missed = "-" if official is None else str(int(np.sum(robust & ~np.array(official["robust"]))))
        speed = "-" if official is None else f"{official['seconds'] / r['seconds']:.2f}"
        per_attack = " / ".join(f"{r['seconds_per_attack'].get(s, 0.0):.1f}" for s in STAGES.values())
        rows.append([r["run"], f"{r['seconds']:.1f}", per_attack,
                     f"{100 * (1 - robust.mean()):.1f}", speed, missed])
    print(kg.evaluation.render_table(
        f"AutoAttack (standard) at {epsilon:g}, l_inf, {len(results[0]['robust'])} images",
        ["run", "seconds", " / ".join(STAGES.values()), "% robust error",
         "x official's speed", "broken by the official only"], rows))
    counted = [r for r in results if "passes_per_image" in r]
    stages = list(dict.fromkeys(s for r in counted for s in r["passes_per_image"]))
    cell = lambda c: f"{c['forward']:.0f} / {c['gradient']:.0f}" if c else "-"  # noqa: E731
    print(kg.evaluation.render_table(
        "Model passes per image attacked, forward / with input gradient (PyTorch, counted; "
        "JAX and TensorFlow run the same algorithm)", ["run", *stages, "total"],
        [[r["run"], *(cell(r["passes_per_image"].get(s)) for s in stages),
          cell({k: sum(c[k] for c in r["passes_per_image"].values())
                for k in ("forward", "gradient")})] for r in counted]))


if __name__ == "__main__":
    name, path, num_images, epsilon = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    images, labels = kg.datasets.load_offline_mnist()[1]  # the main job's test digits
    images, labels = images[:num_images].astype(np.float32), labels[:num_images].astype(np.int64)
    logging.getLogger("keras_gradreg.evaluation.cascade").setLevel(logging.INFO)
    print(_RESULT + json.dumps(measure(name, path, images, labels, epsilon)))
