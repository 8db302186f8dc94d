"""Progress a user sees while an evaluation runs, and the batch loop that advances it."""

import collections
import concurrent.futures
import contextlib
import io
import itertools
import re
import sys

from typing import Optional

import keras

from keras_gradreg import backend
from keras_gradreg import validation
from keras_gradreg.attacks import judge


LOG_INTERVAL = 10.0
"""Seconds between progress lines when the output is not a terminal (a log file): a
bar redrawn in place on a terminal would otherwise write a line every 0.05 s."""


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*m")
"""The bold and colour codes Keras' bar writes whatever the output."""
_TO_DO = re.compile(r"\x1b\[37m(━*)\x1b\[0m")
"""The part of Keras' bar still to go: the same characters as the part done, in grey
(Keras 3.15's format: test_progress_in_a_log_is_plain_text fails if it changes)."""


def _plain(line: str) -> str:
    """A line of Keras' bar without terminal codes, the part still to go as dots."""
    return _TERMINAL_CODES.sub("", _TO_DO.sub(lambda m: "·" * len(m.group(1)), line))


class _PlainProgbar(keras.utils.Progbar):
    """Keras' Progbar writing its lines without the terminal's bold and colour codes."""

    def update(self, current, values=None, finalize=None):
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            super().update(current, values, finalize)
        sys.stdout.write(_plain(text.getvalue()))
        sys.stdout.flush()


def progress_bar(target: int, verbose: int, unit_name: str) -> keras.utils.Progbar:
    """A Keras Progbar with an ETA: redrawn in place on a terminal or in a notebook; in a
    log, a new line every LOG_INTERVAL s, in plain text (Keras redraws in place on every
    POSIX system, which leaves a log file one long line of backspaces, and writes
    terminal codes)."""
    terminal = sys.stdout.isatty() or "ipykernel" in sys.modules
    bar = (keras.utils.Progbar if terminal else _PlainProgbar)(
        target, verbose=verbose, interval=0.05 if terminal else LOG_INTERVAL, unit_name=unit_name)
    bar._dynamic_display = terminal  # see backend.PRIVATE_KERAS_APIS
    return bar


def workers(count: Optional[int] = None) -> int:
    """How many batches `in_batches` attacks at the same time, each in a thread of its own
    (a backend runs a compiled function without holding Python's lock): one batch's Python and NumPy
    work, and the small operations that leave a core idle, overlap the other's. Each batch
    runs the same graph on the same inputs as alone, so the results are the same (tested).

    Args:
      count: a number >= 1, or None: two where the backend sees no GPU (faster on CPUs,
        docs/cost.md), one where it sees one, since two batches at once hold twice the
        memory a batch size was chosen for.

    Raises:
      ValueError: count is neither None nor a whole number >= 1.
    """
    if count is None:
        return 1 if backend.current().has_gpu() else 2
    return validation.check_number("workers", count, low=1, low_open=False, integer=True,
                                   hint="(or None: 2 without a GPU, 1 with one)")


def in_batches(fn, indices, batch_size, progress, at_once=1):
    """fn(batch) for each consecutive batch of `indices`, `at_once` batches at a time
    (see `workers`); yields (batch, result) in order, advancing `progress` by one a batch.
    A batch starts when the one `at_once` places ahead of it has finished, so after an
    error (raised here, as fn raised it) or an interrupt no new batch starts, and this
    returns once the running ones have finished. With one, fn runs in the caller's
    thread; with more, in threads of their own, which a device scope of the caller
    (`tf.device`) does not reach (there is one device where there is no GPU)."""
    batches = iter(judge.batches(indices, batch_size))
    if at_once == 1:
        for idx in batches:
            result = fn(idx)
            progress.add(1)
            yield idx, result
        return
    pool = concurrent.futures.ThreadPoolExecutor(at_once)
    running = collections.deque()  # (batch, its future), in order

    def start(count):
        running.extend((batch, pool.submit(fn, batch))
                       for batch in itertools.islice(batches, count))

    try:
        start(at_once)
        while running:
            idx, future = running.popleft()
            result = future.result()
            start(1)
            progress.add(1)
            yield idx, result
    finally:
        pool.shutdown(cancel_futures=True)
