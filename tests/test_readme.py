"""Every ```python snippet of README.md and docs/*.md runs as written, and the docs stand
on their own: their relative links resolve inside the repository and nothing refers to
files that are not in it.

Each snippet runs in its own interpreter (a fresh namespace, no state shared with the
test session or the other snippets), on the CPU when there is no GPU. Sections added
to the README later are picked up automatically. Skipped where the docs are absent
(an installed package tested from outside its checkout without them).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
DOCS = [p for p in DOCS if p.is_file()]
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


# libraries some snippets use that fastcollate does not depend on (the integrations,
# arrow and hf extras): without them such a snippet is skipped, never passed
OPTIONAL = {"torchdata", "datasets", "transformers", "lightning", "pyarrow"}


def snippets():
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in SNIPPET.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(pytest.param(m.group(1), id=f"{doc.relative_to(ROOT)}:{line}"))
    return found


pytestmark = pytest.mark.skipif(not (ROOT / "README.md").is_file(),
                                reason="README.md is not next to the tests")


@pytest.mark.parametrize("code", snippets() or [pytest.param("", marks=pytest.mark.skip)])
def test_snippet_runs(code, tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="0")
    # the snippet imports the same fastcollate as these tests (a checkout or an install)
    import fastcollate
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(fastcollate.__file__).parents[1])] + env.get("PYTHONPATH", "").split(os.pathsep))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", result.stderr)
    if result.returncode and missing and missing.group(1).split(".")[0] in OPTIONAL:
        pytest.skip(f"needs {missing.group(1)} (an optional extra) to run")
    assert result.returncode == 0, f"snippet failed:\n{code}\n{result.stderr[-3000:]}"


def test_the_readme_has_snippets():
    assert len([s for s in snippets() if "README.md" in s.id]) >= 4


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_nothing_refers_to_files_outside_the_repository():
    # DESIGN.md is the team's private notes: the docs, docstrings and comments must not
    # send users to it
    files = [p for d in ("fastcollate", "tests", "benchmarks", "docs", ".ci")
             if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*")
             if p.is_file() and p.suffix in (".py", ".pyx", ".pyi", ".h", ".md", "")]
    files += DOCS + [ROOT / "setup.py", ROOT / "pyproject.toml"]
    this = Path(__file__).resolve()
    bad = [str(p.relative_to(ROOT)) for p in files
           if p.resolve() != this and p.is_file() and "DESIGN.md" in p.read_text(errors="ignore")]
    assert not bad, f"these refer to DESIGN.md, which is not in the repository: {bad}"
