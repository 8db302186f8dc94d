"""The documentation site builds with `mkdocs build --strict` (a broken link, a missing
page or anchor, a docstring naming a parameter the signature lacks all fail it), and
every public name of the package has a docstring."""

import os
import subprocess
import sys

import griffe
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _undocumented(module: griffe.Module) -> list:
    """The public names of a module and its submodules (not imported ones) without a
    docstring, the modules themselves included."""
    missing = [] if module.docstring else [module.path]
    for name, member in module.members.items():
        if name.startswith("_") or member.is_alias:
            continue
        if member.is_module:
            missing += _undocumented(member)
        elif not member.docstring:
            missing.append(member.path)
    return missing


def test_every_public_name_has_a_docstring():
    package = griffe.load("keras_gradreg", search_paths=[ROOT])
    assert _undocumented(package) == []


def test_a_name_without_a_docstring_is_caught(tmp_path):
    (tmp_path / "fake_package").mkdir()
    (tmp_path / "fake_package" / "__init__.py").write_text(
        '"""A package."""\n\nDOCUMENTED = 1\n"""One."""\nBARE = 2\n\n\n'
        'def helper():\n    pass\n\n\ndef _private():\n    pass\n')
    package = griffe.load("fake_package", search_paths=[str(tmp_path)])
    assert _undocumented(package) == ["fake_package.BARE", "fake_package.helper"]


@pytest.mark.processes
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "api/models/index.html", "frontier/index.html",
                 "changelog/index.html"):
        assert (tmp_path / "site" / page).exists(), page
    models = (tmp_path / "site" / "api" / "models" / "index.html").read_text()
    assert "GradRegModel" in models and "penalty_every" in models  # rendered from docstrings
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text()
    assert "0.7.0" in changelog  # CHANGELOG.md included, not a copy
