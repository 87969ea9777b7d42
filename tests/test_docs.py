"""The README and the user guide (docs/guide/, MkDocs): the strict build passes (broken links and missing references
fail it), the configuration reference covers every option of conf/, and every recipe line (``python search.py``,
``python train.py``, ``alsatian``) composes with the current config tree or parses with the CLI."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings")),
                    reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_the_guide_builds_strictly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "", "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": ":".join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in ("concepts", "searching", "models", "data", "scorers", "finetuning", "distributed", "operations",
                 "reference", "api"):
        assert (tmp_path / "site" / "guide" / page / "index.html").is_file(), page
    assert "SuccessiveHalving" in (tmp_path / "site" / "guide" / "api" / "index.html").read_text()


def test_the_reference_is_generated_from_every_option_of_conf():
    text = _hooks().reference(ROOT / "conf")
    for path in (ROOT / "conf").rglob("*/*.yaml"):
        group = path.parent.relative_to(ROOT / "conf").as_posix()
        assert f"### `{group}={path.stem}`" in text and path.read_text().strip() in text, path


def test_every_guide_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    optional = _hooks().OPTIONAL
    for page in (ROOT / "docs" / "guide").glob("*.md"):
        assert f"guide/{page.name}" in nav or f"guide/{page.name}" in optional, page.name


def _expand(word: str) -> str:
    """A word as bash expands it: ``$HOME`` and other variables; ``~`` only where bash does (a word's start, or
    after ``=`` in a plain variable assignment), so ``dataset.path=~/x`` reaches Hydra as written."""
    word = os.path.expandvars(word)
    return os.path.expanduser(word) if word.startswith("~") else word


def _needs(line: str) -> str | None:
    """What a recipe line needs that is not shipped: its trailing comment's ``needs: ...`` clause, else None."""
    found = re.search(r"#.*\bneeds: ([^;#]+)", line)
    return found.group(1).strip() if found else None


def _recipes():
    """Every command line of a ``bash`` block of the README and the guide: (page, script or 'alsatian', args,
    needs: what it needs that is not shipped, or None)."""
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                words = [_expand(w) for w in shlex.split(line, comments=True)]
                if words[:2] in (["python", "search.py"], ["python", "train.py"]):
                    yield page.name, words[1], words[2:], _needs(line)
                elif words[:1] == ["alsatian"]:
                    args = words[1:words.index("|")] if "|" in words else words[1:]
                    yield page.name, "alsatian", args, _needs(line)


RECIPES = list(_recipes())


def test_the_pages_hold_recipes():
    assert len(RECIPES) >= 30 and {"README.md", "searching.md", "models.md", "data.md"} <= {r[0] for r in RECIPES}


@pytest.mark.parametrize("page,script,args,needs", RECIPES, ids=[f"{r[0]}:{' '.join(r[2])[:60]}" for r in RECIPES])
def test_every_recipe_composes(page, script, args, needs):
    """Runs would need data or weights that are not shipped; composing checks every group, option and key."""
    if script == "alsatian":
        from alsatian_pl.app.cli import parser
        parser().parse_args(args)
        return
    overrides = [a for a in args if a != "-m" and not a.startswith("--")]
    overrides = [a.split(",")[0] if "-m" in args else a for a in overrides]  # a sweep: its first job
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        compose(script.removesuffix(".py"), overrides=overrides)
