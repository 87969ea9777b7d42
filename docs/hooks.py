"""MkDocs hooks of the user guide (``mkdocs.yml``: ``hooks: [docs/hooks.py]``), stdlib only:

* ``guide/reference.md`` is generated from the config tree ``conf/`` at every build, so it cannot go stale: every
  group, every option with its first comment line, and each option's YAML as it ships (comments are the docs);
* pages that other work adds to ``docs/guide/`` (``OPTIONAL``) join the navigation when they exist, and the build
  passes either way.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"guide/precision.md": "Precision", "guide/confidence.md": "Confidence"}  # (page, title), after scorers
GROUPS = {  # one line per group, in the order a user meets them
    "dataset": "the data to rank models for",
    "models": "the candidate zoo",
    "search": "the strategy and its options (search.<key>)",
    "search/scorer": "the proxy score (search.scorer.kwargs.<option>)",
    "store": "where the block store lives",
    "logger": "per-round metrics of a search (search.py)",
    "callbacks": "extra search callbacks",
    "trainer": "the Lightning Trainer that fine-tunes the winner (train.py)",
    "finetune": "what of the winner trains, and how (train.py)",
    "hydra": "run folders, help (Hydra's own settings)",
}


def _summary(text: str) -> str:
    """An option's first comment line (what it is), without the leading ``#``."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").replace("|", "\\|")
    return ""


def reference(conf: Path = ROOT / "conf") -> str:
    """The configuration reference page (Markdown) of the config tree under ``conf``."""
    groups = sorted({p.parent.relative_to(conf).as_posix() for p in conf.rglob("*/*.yaml")},
                    key=lambda g: (list(GROUPS).index(g) if g in GROUPS else len(GROUPS), g))
    out = ["# Configuration reference", "",
           "Generated from `conf/` when the guide is built: every config group, every option, and each option's "
           "YAML with its comments. Choose an option with `group=option` (`search/scorer=knn`), set a key with "
           "`group.key=value` (`search.cache_budget=1GB`), add a key the option lacks with `+group.key=value`. "
           "`python search.py --help` prints the same groups; `python search.py --cfg job` the composed config.", ""]
    for top in ("search.yaml", "train.yaml"):
        out += [f"## `{top}` (the defaults)", "", "```yaml", (conf / top).read_text().rstrip(), "```", ""]
    for group in groups:
        options = sorted((conf / group).glob("*.yaml"))
        out += [f"## `{group}`", "", GROUPS.get(group, "").capitalize() + ".", "", "| option | what it is |",
                "|---|---|"]
        out += [f"| `{group}={p.stem}` | {_summary(p.read_text())} |" for p in options]
        out.append("")
        for p in options:
            out += [f"### `{group}={p.stem}`", "", "```yaml", p.read_text().rstrip(), "```", ""]
    return "\n".join(out)


def on_config(config, **kwargs):
    """Add the optional pages that exist to the navigation, after "Scorers and confidence"."""
    docs = Path(config["docs_dir"])
    nav = config["nav"]
    at = next((i + 1 for i, item in enumerate(nav) if "guide/scorers.md" in item.values()), len(nav))
    for page, title in reversed(list(OPTIONAL.items())):
        if (docs / page).is_file() and not any(page in item.values() for item in nav if isinstance(item, dict)):
            nav.insert(at, {title: page})
    return config


def on_files(files, config, **kwargs):
    """The generated configuration reference, as if it were a file of the guide."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "guide/reference.md", content=reference()))
    return files
