"""The ImportError raised when the compiled extension is missing, made to say why.

The common case: ``pip install .`` built and installed the package into site-packages,
then ``import fastcollate`` is run from the source checkout's root, where the
checkout's own ``fastcollate/`` (no compiled extension in it) comes first on
``sys.path`` and shadows the installed one. Telling that user to run ``pip install .``
again would not help.
"""
from __future__ import annotations

import importlib.machinery
import os
import sys
from typing import List, Optional


def _has_extension(package_dir: str) -> bool:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    try:
        names = os.listdir(package_dir)
    except OSError:
        return False
    return any(n.startswith("_core.") and n.endswith(suffixes) for n in names)


def shadowed_install(package_dir: str, path: Optional[List[str]] = None) -> Optional[str]:
    """The directory of another ``fastcollate`` package on ``sys.path`` (``path``) that
    has its compiled extension, if ``package_dir`` (the one being imported) has none."""
    here = os.path.realpath(package_dir)
    if _has_extension(here):
        return None
    for entry in sys.path if path is None else path:
        candidate = os.path.realpath(os.path.join(entry or os.getcwd(), "fastcollate"))
        if candidate != here and _has_extension(candidate):
            return candidate
    return None


def missing_extension_message(init_file: str, error: BaseException) -> str:
    package_dir = os.path.dirname(os.path.abspath(init_file))
    installed = shadowed_install(package_dir)
    if installed is not None:
        where = ("the current directory comes first on sys.path"
                 if os.path.dirname(package_dir) == os.getcwd() else "it comes first on sys.path")
        return (
            f"fastcollate is being imported from {package_dir}, a source checkout without "
            f"the compiled extension, which shadows the installed fastcollate in "
            f"{installed} ({where}). Run Python from another directory, or install the "
            f"checkout in place with `pip install -e .`. Original error: {error}")
    return (
        "fastcollate's compiled extension (fastcollate._core) is missing or broken in "
        f"{package_dir}: install the package with `pip install .` (then import it from "
        "outside the source checkout) or `pip install -e .` (builds it in the checkout). "
        f"Original error: {error}")
