"""Files written whole or not at all: a kill -9 at any moment leaves the old file or the new."""

import contextlib
import os


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
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: str, text: str) -> None:
    """Writes a text file whole or not at all."""
    with replaced_atomically(path) as temporary, open(temporary, "w") as f:
        f.write(text)
