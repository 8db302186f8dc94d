"""Processes and devices: joining a multi-process JAX run, the chief's decisions and
files shared with the others, and the distribution scope a run builds its model in."""

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from typing import Optional

import numpy as np

from keras_gradreg import backend
from keras_gradreg import files
from keras_gradreg.training.config import TrainConfig
from keras_gradreg.training.config import settings

def start_processes(config: TrainConfig) -> None:
    """Joins the processes of a multi-process run (JAX), or raises ConnectionError in time.

    Every process then checks that all were started with the same settings.
    """
    if config.strategy != "data_parallel" or config.num_processes == 1:
        return
    where = (f"process {config.process_id} of {config.num_processes}, coordinator "
             f"{config.coordinator_address}")
    if config.process_id > 0:  # JAX aborts the process where the coordinator is unreachable
        _wait_for(config.coordinator_address, config.coordinator_timeout, where)
    try:
        backend.current().join_processes(config.coordinator_address, config.num_processes,
                                          config.process_id, config.coordinator_timeout)
    except Exception as error:  # JAX raises several kinds (XlaRuntimeError, RuntimeError)
        raise ConnectionError(
            f"{where}: the processes did not all connect within {config.coordinator_timeout} s "
            f"({type(error).__name__}: {str(error).splitlines()[0][:300]}). Start process 0 "
            "on the coordinator's host, the same num_processes everywhere, and check that the "
            "address is reachable.") from error
    mine = json.dumps(dict(settings(config), num_processes=config.num_processes), sort_keys=True)
    digest = np.frombuffer(hashlib.sha256(mine.encode()).digest(), np.uint8)
    every = np.asarray(backend.current().gather_from_processes(digest))
    differ = [i for i, d in enumerate(every.reshape(-1, digest.size)) if not np.array_equal(d, digest)]
    if differ:
        raise ValueError(f"{where}: processes {differ} were started with other settings than this "
                         "one; start every process with the same flags but --process_id.")


def _wait_for(address: str, timeout: float, where: str) -> None:
    """Returns once a TCP connection to HOST:PORT succeeds; ConnectionError after `timeout` s."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"{where}: nothing answered at {address} within {timeout} s ({error}). "
                    "Start process 0 there first (it hosts the coordinator), and check the "
                    "address and the firewall.") from error
            time.sleep(0.5)


def is_chief(config: TrainConfig) -> bool:
    """Whether this process writes the run's files (process 0)."""
    return config.process_id == 0


def agree(config: TrainConfig, values: list) -> list:
    """The chief's integers, in every process (a no-op in a single-process run)."""
    if config.num_processes == 1:
        return values
    chiefs = backend.current().send_from_chief(np.asarray(values, np.int64))
    return [int(v) for v in chiefs]


def distribution(config: TrainConfig):
    """The context a run builds and fits its model in: its strategy's, from the backend
    module that runs it (config.check_processes pairs them)."""
    return backend.current().distribution_scope(config.strategy)


@contextlib.contextmanager
def written(path: str, writes: bool):
    """A temporary path to save to: it replaces `path` whole if this process `writes`,
    else it is thrown away. Every process of a multi-process JAX run must save together
    (the values are gathered collectively); only the chief keeps the file."""
    if writes:
        with files.replaced_atomically(path) as temporary:
            yield temporary
    else:
        with tempfile.TemporaryDirectory() as folder:
            yield os.path.join(folder, os.path.basename(path))


@contextlib.contextmanager
def from_chief(path: Optional[str], shared: bool):
    """The chief's file `path`, readable in every process: itself in a single-process
    run, else a local copy of the bytes the chief sends (so that all processes load the
    same checkpoint together, and the others need no access to model_dir)."""
    if not shared:
        yield path
        return
    send = backend.current().send_from_chief
    data = np.fromfile(path, np.uint8) if path else np.zeros(0, np.uint8)
    size = int(send(np.int64(data.size)))
    data = data if path else np.zeros(size, np.uint8)
    data = np.asarray(send(data), np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "checkpoint.weights.h5")
        data.tofile(local)
        yield local
