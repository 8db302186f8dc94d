"""Progress and the batch loop: live on a terminal, plain in a log, two batches at a time
with the results of one."""

import dataclasses
import sys
import threading
import time

import numpy as np
import pytest

from helpers import FAST
from helpers import evaluation_problem
import keras_gradreg as kg
from keras_gradreg.evaluation import progress as progress_lib


@pytest.mark.parametrize("tty,interval", [(True, 0.05), (False, kg.evaluation.LOG_INTERVAL)])
@pytest.mark.every_backend
def test_progress_is_live_on_a_terminal_and_a_line_every_few_seconds_in_a_log(monkeypatch, tty,
                                                                            interval):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    bar = kg.evaluation.progress_bar(7, 1, "attack batch")
    assert (bar.target, bar.interval, bar.unit_name) == (7, interval, "attack batch")
    assert bar._dynamic_display == tty  # a log gets new lines, not backspaces
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # a notebook: not a terminal, but live
    assert kg.evaluation.progress_bar(7, 1, "attack batch")._dynamic_display


@pytest.mark.every_backend
def test_progress_in_a_log_is_plain_text(monkeypatch, capsys):
    """Keras writes bold and colour codes into its bar whatever the output; a log gets
    the same line without them."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    bar = kg.evaluation.progress_bar(7, 1, "attack batch")
    bar.add(3)
    shown = capsys.readouterr().out
    assert "3/7" in shown and "━━━━━━━━·" in shown and "·━" not in shown  # done, then to go
    bar.add(4)
    shown = capsys.readouterr().out
    assert "7/7" in shown and "attack batch" in shown and "·" not in shown
    assert "\x1b" not in shown
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    kg.evaluation.progress_bar(7, 1, "attack batch").add(7)
    assert "\x1b[" in capsys.readouterr().out  # what a terminal gets, and a log did before


class _Count:
    """A progress bar that only counts."""

    def __init__(self):
        self.done = 0

    def add(self, count):
        self.done += count


def _no_gpu(monkeypatch):
    monkeypatch.setattr(kg.backend.current(), "has_gpu", lambda: False)


@pytest.mark.every_backend
def test_batches_run_two_at_a_time_and_come_back_in_order(monkeypatch):
    _no_gpu(monkeypatch)  # the default on a machine without a GPU, wherever this runs
    assert progress_lib.workers() == 2
    both = threading.Barrier(2, timeout=20)  # broken unless batches 0 and 1 overlap

    def attack(batch):
        if batch[0] < 6:
            both.wait()
        time.sleep(0.05 * (batch[0] % 2 == 0))  # odd batches finish first
        return batch * 10

    progress = _Count()
    got = list(progress_lib.in_batches(attack, np.arange(11), 3, progress, 2))
    assert [list(idx) for idx, _ in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    assert all(np.array_equal(result, idx * 10) for idx, result in got)
    assert progress.done == 4


@pytest.mark.every_backend
def test_one_batch_at_a_time_where_the_backend_sees_a_gpu_unless_told(monkeypatch):
    monkeypatch.setattr(kg.backend.current(), "has_gpu", lambda: True)
    assert progress_lib.workers() == 1 and progress_lib.workers(3) == 3
    threads = set()
    list(progress_lib.in_batches(lambda b: threads.add(threading.get_ident()), np.arange(3), 1,
                                 _Count()))
    assert threads == {threading.get_ident()}  # the caller's
    for bad in (0, 1.5, "2", True):
        with pytest.raises(ValueError, match=f"workers={bad!r} must be an integer >= 1"):
            progress_lib.workers(bad)
    three = threading.Barrier(3, timeout=20)  # broken unless batches 0, 1 and 2 overlap
    got = list(progress_lib.in_batches(lambda b: three.wait() if b[0] < 3 else None,
                                       np.arange(5), 1, _Count(), 3))
    assert [int(idx[0]) for idx, _ in got] == [0, 1, 2, 3, 4]
    model, x, y, _, _ = evaluation_problem()
    with pytest.raises(ValueError, match="workers=0"):  # before any attack
        kg.evaluate_robustness(model, x, y, workers=0, verbose=0)


@pytest.mark.every_backend
def test_an_error_in_a_batch_is_raised_and_no_later_batch_starts():
    started, second = [], threading.Event()

    def attack(batch):
        started.append(int(batch[0]))
        if batch[0] == 0:
            assert second.wait(timeout=20)  # batch 1 runs meanwhile
            raise ValueError("batch 0 failed")
        second.set()
        return batch

    with pytest.raises(ValueError, match="batch 0 failed"):
        list(progress_lib.in_batches(attack, np.arange(10), 1, _Count(), 2))
    assert sorted(started) == [0, 1]


def test_batches_attacked_two_at_a_time_give_the_results_of_one_at_a_time(trained_cnn):
    """Both protocols, with random starts (APGD, Square) and FAB's memory, bit for bit."""
    model, x, y = trained_cnn
    budget = kg.AutoAttackBudget(apgd_steps=10, target_classes=3, fab_steps=10,
                                 square_queries=100)

    def evaluate(workers):
        report = kg.evaluate_robustness(model, x, y, num_images=40, epsilons=(0.05, 0.1),
                                        attacks=("apgd_ce", "fab_t"), batch_size=8,
                                        budget=dataclasses.replace(FAST, autoattack=budget),
                                        lower_bound=False, workers=workers, verbose=0)
        cascade = kg.evaluate_autoattack(model, x, y, num_images=40, epsilons=(0.05, 0.1),
                                         batch_size=8, budget=budget, workers=workers, verbose=0)
        return report, cascade

    together = evaluate(2)  # also on a machine with a GPU
    alone = evaluate(1)
    np.testing.assert_array_equal(together[0].distances, alone[0].distances)
    np.testing.assert_array_equal(together[0].adversarial, alone[0].adversarial)
    assert [c.value for c in together[0].checks] == [c.value for c in alone[0].checks]
    assert 0 < together[0].error_at(0.1) < 1  # something to compare
    for a, b in zip(together[1], alone[1]):
        np.testing.assert_array_equal(a.broken_by, b.broken_by)
        np.testing.assert_array_equal(a.adversarial, b.adversarial)
