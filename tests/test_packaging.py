"""Packaging and import behaviour: metadata, one version, the release build's flags, the
error when a source checkout shadows the installed package, submodules on import.

The build itself (sdist and wheel contents, .so sizes, the tests run from the installed
sdist) is checked by ``.ci/sdist``; these are the fast checks of the configuration
behind it. Skipped where the project files are absent (tests run from an install).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastcollate

ROOT = Path(__file__).resolve().parents[1]
needs_project = pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(),
                                   reason="no pyproject.toml next to the tests")


def pyproject():
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def run(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, **kwargs)


# In the child: no editable-install finder (it would resolve fastcollate._core by name,
# whatever directory the package came from), as after a plain `pip install .`.
NO_EDITABLE = ("import sys; sys.meta_path = [f for f in sys.meta_path "
               "if '__editable__' not in getattr(f, '__module__', '')]; ")


@needs_project
def test_the_version_has_one_source():
    project = pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, name = attr.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) == fastcollate.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", fastcollate.__version__)


@needs_project
def test_license_is_an_spdx_string_with_its_file():
    project = pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in text and "the fastcollate developers" in text
    assert not any(c.startswith("License ::") for c in project["classifiers"])


@needs_project
def test_torch_lower_bound_has_what_the_code_and_tests_use():
    (torch_req,) = [d for d in pyproject()["project"]["dependencies"] if d.startswith("torch")]
    bound = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", torch_req).group(1).split("."))
    assert bound >= (2, 5)              # pad_sequence(padding_side=...)
    readme = (ROOT / "README.md").read_text()
    assert f"torch >= {bound[0]}.{bound[1]}" in readme


@needs_project
def test_wheel_leaves_out_generated_c_and_sdist_carries_the_test_helpers():
    excluded = pyproject()["tool"]["setuptools"]["exclude-package-data"]["fastcollate"]
    assert "*.c" in excluded
    manifest = (ROOT / "MANIFEST.in").read_text().split("\n")
    assert "graft tests" in manifest and "include LICENSE README.md" in manifest


@needs_project
def test_release_builds_drop_debug_info_and_debug_builds_keep_it():
    spec = importlib.util.spec_from_file_location("fastcollate_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    cwd = os.getcwd()
    os.chdir(ROOT)              # setup.py globs fastcollate/*.pyx relative to the root
    try:
        spec.loader.exec_module(setup)      # defines the extensions; setup() not called
    finally:
        os.chdir(cwd)
    assert setup.strip_args(False, "-O2 -g", "linux") == (["-g0"], ["-Wl,-S"])
    assert setup.strip_args(True, "-O2 -g", "linux") == ([], [])          # FASTCOLLATE_DEBUG
    assert setup.strip_args(False, "-fsanitize=address -g", "linux") == ([], [])
    assert setup.strip_args(False, "", "win32") == ([], [])
    assert setup.extensions and all("-Wl,-S" in e.extra_link_args or setup.DEBUG
                                    for e in setup.extensions)


def test_submodules_are_attributes_after_a_plain_import():
    result = run("import fastcollate; print(fastcollate.kernels.scatter.__name__, "
                 "fastcollate.rnn.pack_sequence.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["scatter", "pack_sequence"]


def test_a_checkout_shadowing_the_installed_package_is_explained(tmp_path):
    # a "checkout": the package's Python files without the compiled extension, run from
    # its root; the real package (with its extension) is on sys.path after it
    package = Path(fastcollate.__file__).parent
    checkout = tmp_path / "checkout"
    shutil.copytree(package, checkout / "fastcollate",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.c"))
    env = dict(os.environ, PYTHONPATH=str(package.parent))
    result = run(NO_EDITABLE + "import fastcollate", cwd=checkout, env=env)
    assert result.returncode != 0
    assert "shadows the installed fastcollate" in result.stderr
    assert str(package) in result.stderr and "another directory" in result.stderr


def test_a_missing_extension_without_an_install_says_how_to_build(tmp_path):
    package = Path(fastcollate.__file__).parent
    shutil.copytree(package, tmp_path / "fastcollate",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.c"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # no other fastcollate on sys.path: only the one in the current directory
    result = run(NO_EDITABLE + "import os; sys.path = [p for p in sys.path if p and not "
                 "os.path.isdir(os.path.join(p, 'fastcollate'))]; sys.path.insert(0, ''); "
                 "import fastcollate", cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "compiled extension (fastcollate._core) is missing" in result.stderr
    assert "pip install -e ." in result.stderr
