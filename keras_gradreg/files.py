"""Files written whole or not at all: a kill -9 at any moment leaves the old file or the new,
and a set of files (a results file, its table and its plot) the old set or the new one."""

import contextlib
import json
import os
from typing import Iterable, Sequence

JOURNAL = ".replacing.json"
"""In a folder whose set of files is being replaced: the renames still to do (see
`replaced_together`)."""


@contextlib.contextmanager
def replaced_atomically(path: str):
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds.

    The temporary name keeps the whole file name as its suffix (".keras", ".weights.h5",
    ".png"), which is how Keras and matplotlib choose a format. The data are flushed to
    disk before the rename, which is atomic on POSIX file systems; if the block fails,
    the temporary file is removed and `path` is untouched.
    """
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".partial-{os.getpid()}-{name}")
    try:
        yield temporary
        _flush(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: str, text: str) -> None:
    """Writes a text file whole or not at all."""
    with replaced_atomically(path) as temporary, open(temporary, "w") as f:
        f.write(text)


@contextlib.contextmanager
def replaced_together(paths: Sequence[str]):
    """Yields a temporary path for each of `paths` (all in one folder); if the block
    succeeds, the new files replace `paths` as one set.

    The temporaries are flushed to disk, then a journal naming the renames (JOURNAL, in
    the folder) is written whole: that is the moment the new set is committed. The
    renames follow and the journal is removed. A kill before the journal leaves the old
    set untouched (and stray ".partial-" files that nothing reads); a kill after it is
    completed by `finish_replacing`, which every reader of the set calls first (and the
    next `replaced_together`), so no one sees a mix of old and new files.
    """
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(folders) != 1:
        raise ValueError(f"paths {list(paths)!r} must share one folder, to be replaced together.")
    folder = folders.pop()
    finish_replacing(folder)
    names = [os.path.basename(p) for p in paths]
    temporaries = [os.path.join(folder, f".partial-{os.getpid()}-{n}") for n in names]
    journal = os.path.join(folder, JOURNAL)
    try:
        yield temporaries
        for temporary in temporaries:
            _flush(temporary)
        write_text(journal, json.dumps([[os.path.basename(t), n] for t, n in zip(temporaries, names)]))
        finish_replacing(folder)
    finally:
        if not os.path.exists(journal):
            for temporary in temporaries:
                if os.path.exists(temporary):
                    os.remove(temporary)


def finish_replacing(folder: str) -> None:
    """Completes a replacement of a set of files in `folder` that a kill interrupted after
    it was committed (see `replaced_together`); does nothing if there is none."""
    journal = os.path.join(folder, JOURNAL)
    if not os.path.exists(journal):
        return
    with open(journal) as f:
        renames = json.load(f)
    for temporary, name in renames:
        if os.path.exists(os.path.join(folder, temporary)):
            os.replace(os.path.join(folder, temporary), os.path.join(folder, name))
    os.remove(journal)


def existing(folder: str, names: Iterable[str]) -> list:
    """The paths of those of `names` that exist in `folder`, an interrupted replacement
    of them completed first."""
    finish_replacing(folder)
    return [os.path.join(folder, n) for n in names if os.path.exists(os.path.join(folder, n))]


def refuse_to_replace(paths: Sequence[str], overwrite: bool) -> None:
    """Raises FileExistsError naming `paths` (existing files) unless `overwrite`."""
    if paths and not overwrite:
        raise FileExistsError(f"{', '.join(paths)} already exist(s); pass overwrite=True "
                              "(--overwrite) to replace them, or choose another output directory.")


def _flush(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
