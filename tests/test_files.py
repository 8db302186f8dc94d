"""Whole-or-nothing files: a set of files replaced together survives a kill -9 between its
renames as the old set or the new one, never a mix."""

import os
import signal
import subprocess
import sys

import pytest

from keras_gradreg import files

NAMES = ("results.json", "results.csv", "plot.png")

# Replaces NAMES in FOLDER by "new ..." files, killing itself with SIGKILL at the chosen
# rename: "journal" just before the commit, or after the Nth rename of the set.
_CHILD = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("files", sys.argv[1])
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
folder, kill_at = sys.argv[2], sys.argv[3]
names = sys.argv[4:]
real, renamed = os.replace, []

def replace(source, target):
    if os.path.basename(target) == files.JOURNAL:
        if kill_at == "journal":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(source, target)
    real(source, target)
    renamed.append(target)
    if str(len(renamed)) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
with files.replaced_together([os.path.join(folder, n) for n in names]) as temporaries:
    for temporary, name in zip(temporaries, names):
        with open(temporary, "w") as f:
            f.write("new " + name)
"""


def _contents(folder):
    return [open(os.path.join(folder, n)).read() for n in NAMES]


def _old_set(folder):
    os.makedirs(folder, exist_ok=True)
    for name in NAMES:
        with open(os.path.join(folder, name), "w") as f:
            f.write("old " + name)


def _killed_writer(folder, kill_at):
    result = subprocess.run([sys.executable, "-c", _CHILD, files.__file__, folder, kill_at, *NAMES],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr


@pytest.mark.parametrize("kill_at", ["1", "2"])
def test_a_kill_between_the_renames_leaves_the_new_set_for_every_reader(tmp_path, kill_at):
    folder = str(tmp_path)
    _old_set(folder)
    _killed_writer(folder, kill_at)
    raw = [open(os.path.join(folder, n)).read().split()[0] for n in NAMES]
    assert raw.count("new") == int(kill_at) and os.path.exists(tmp_path / files.JOURNAL)  # mixed
    assert files.existing(folder, NAMES) == [os.path.join(folder, n) for n in NAMES]
    assert _contents(folder) == ["new " + n for n in NAMES]
    assert sorted(os.listdir(folder)) == sorted(NAMES)  # journal and temporaries gone


def test_a_kill_before_the_commit_leaves_the_old_set(tmp_path):
    folder = str(tmp_path)
    _old_set(folder)
    _killed_writer(folder, "journal")
    files.existing(folder, NAMES)
    assert _contents(folder) == ["old " + n for n in NAMES]
    assert not os.path.exists(tmp_path / files.JOURNAL)


def test_a_failed_block_leaves_the_old_set_and_no_temporary(tmp_path):
    folder = str(tmp_path)
    _old_set(folder)
    with pytest.raises(RuntimeError, match="plot failed"):
        with files.replaced_together([os.path.join(folder, n) for n in NAMES]) as temporaries:
            open(temporaries[0], "w").write("new")
            raise RuntimeError("plot failed")
    assert _contents(folder) == ["old " + n for n in NAMES]
    assert sorted(os.listdir(folder)) == sorted(NAMES)


def test_a_set_is_replaced_whole_and_must_share_a_folder(tmp_path):
    folder = str(tmp_path)
    _old_set(folder)
    with files.replaced_together([os.path.join(folder, n) for n in NAMES]) as temporaries:
        for temporary, name in zip(temporaries, NAMES):
            open(temporary, "w").write("new " + name)
    assert _contents(folder) == ["new " + n for n in NAMES]
    assert sorted(os.listdir(folder)) == sorted(NAMES)
    with pytest.raises(ValueError, match="share one folder"):
        with files.replaced_together([str(tmp_path / "a"), str(tmp_path / "sub" / "b")]):
            pass


def test_refusing_to_replace_names_the_files_and_the_way_out():
    files.refuse_to_replace([], overwrite=False)
    files.refuse_to_replace(["r.json"], overwrite=True)
    with pytest.raises(FileExistsError, match=r"r.json, r.csv already exist.*--overwrite"):
        files.refuse_to_replace(["r.json", "r.csv"], overwrite=False)
