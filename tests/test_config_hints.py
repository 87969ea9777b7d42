"""Errors that teach the config: an override placed where it does not belong (a group member renamed instead of
switched, a group addressed as a key, another member's option, another group's key) is refused in one line that
names the override to use; checked for every group of conf/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alsatian_pl.app.hints import OPEN, check_overrides, compose_hint, config_tree, hint
from alsatian_pl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TREE = config_tree(str(CONF))
CHOICES = {"dataset": "fashion_mnist", "models": "effnet_lite0_zoo", "search": "alsatian", "search/scorer": "linear",
           "trainer": "default", "finetune": "default", "logger": "csv", "callbacks": "none", "store": "default"}


def test_the_tree_holds_every_group_and_option_of_conf():
    groups = {str(p.parent.relative_to(CONF)) for p in CONF.rglob("*/*.yaml") if p.parts[-2] != "hydra"}
    assert set(TREE) == groups - {"hydra"}
    assert {p.stem for p in (CONF / "search" / "scorer").glob("*.yaml")} == set(TREE["search/scorer"])
    assert "kwargs.k" in TREE["search/scorer"]["knn"] and "kwargs.epochs" in TREE["search/scorer"]["linear"]
    assert "max_epochs" in TREE["trainer"]["smoke"] and "optimizer.lr" in TREE["finetune"]["full"]  # defaults merged


@pytest.mark.parametrize("group", sorted(g for g, options in TREE.items()
                                         if len(options) > 1 and all("name" in keys for keys in options.values())))
def test_renaming_a_group_member_names_the_group_override(group):
    current = CHOICES.get(group, sorted(TREE[group])[0])
    other = next(o for o in sorted(TREE[group]) if o != current)
    key = group.replace("/", ".") + ".name"
    line = hint(f"{key}={other}", TREE, {group: current}, composed=True)
    assert line is not None and f"{group}={other}" in line and f"{group}={current}" in line and "\n" not in line
    assert hint(f"{key}=my_own_name", TREE, {group: current}, composed=True) is None  # a new name is a name


@pytest.mark.parametrize("group", sorted(g for g, options in TREE.items() if len(options) > 1))
def test_an_option_used_as_a_key_names_the_group_override(group):
    option = sorted(TREE[group])[-1]
    line = hint(f"{group.replace('/', '.')}.{option}=true", TREE, {})
    assert line is not None and line.endswith(f"choose it with {group}={option}"), line


def _members_keys():
    """For every group (but those that take any key), one key one option has and another lacks."""
    for group, options in sorted(TREE.items()):
        if group.split("/")[0] in OPEN:
            continue
        for lacking in sorted(options):
            for owner in sorted(options):
                extra = sorted(options[owner] - options[lacking])
                if extra:
                    yield group, lacking, owner, extra[0]
                    break
            else:
                continue
            break


@pytest.mark.parametrize("group,lacking,owner,key", list(_members_keys()))
def test_another_members_option_names_the_member(group, lacking, owner, key):
    full = f"{group.replace('/', '.')}.{key}"
    line = hint(f"{full}=1", TREE, {group: lacking})
    assert line is not None and f"{group}=" in line and owner in line, line
    assert f"{full}=1" in line and f"not of {group}={lacking}" in line


def test_the_issues_cases_each_give_one_line():
    cases = {
        "search.scorer.name=logme": "search/scorer=logme",
        "dataset.name=cars": "dataset=cars",
        "search.scorer=logme": "search/scorer=logme",
        "scorer=knn": "search/scorer=knn",
        "search.scorer.kwargs.k=3": "search/scorer=knn search.scorer.kwargs.k=3",
        "dataset.batch_size=32": "search.batch_size=32",
        "search.max_length=64": "dataset.max_length=64",
        "search.cache_budgt=1GB": "did you mean search.cache_budget=1GB?",
        "trainer.max_epoch=3": "did you mean trainer.max_epochs=3? (+trainer.max_epoch=3 adds it as a new key)",
    }
    for override, expected in cases.items():
        line = hint(override, TREE, CHOICES)
        assert line is not None and expected in line, (override, line)
    with pytest.raises(ConfigError, match=r"search/scorer=linear search.scorer.kwargs.epochs=5"):
        check_overrides(["search/scorer=logme", "++search.scorer.kwargs.epochs=5"], {**CHOICES, "search/scorer":
                                                                                      "logme"}, CONF)


def test_overrides_that_belong_are_left_alone():
    fine = ["dataset=cars", "search/scorer=knn", "search.scorer.kwargs.epochs=5", "++search.scorer.kwargs.epochs=5",
            "+trainer.limit_train_batches=2", "+models.where.tags=[base]", "models.name=my_zoo", "~logger",
            "search.cache_budget=1GB", "+trainer.num_nodes=2", "dataset.path=/data"]
    check_overrides(fine, CHOICES, CONF)
    assert compose_hint("Could not override 'trainer.limit_train_batches'", CONF, ["trainer.limit_train_batches=2"]
                        ) is None  # Hydra's own advice (+trainer.<arg>) stands


def test_search_py_prints_the_hint_in_one_line(tmp_path):
    # one override through the real script (the hints of every case: test_the_issues_cases_each_give_one_line)
    for override, expected in (("search.scorer.kwargs.k=3", "search/scorer=knn search.scorer.kwargs.k=3"),):
        proc = subprocess.run([sys.executable, str(ROOT / "search.py"), override, f"hydra.run.dir={tmp_path}/run",
                               f"store.root={tmp_path}/store"], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and expected in lines[0], proc.stderr
        assert not (tmp_path / "store").exists()  # refused before anything was built


def test_search_py_help_lists_every_group_in_one_line_and_examples(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "search.py"), "--help"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for group, options in TREE.items():
        described = [line for line in lines if line.startswith(f"  {group} ")]
        listed = [line for line in lines if line.startswith(f"{group}: ")]
        assert len(described) == 1 and len(described[0].split(None, 1)[1]) > 20, group
        assert len(listed) == 1 and set(listed[0].split(": ", 1)[1].split(", ")) == set(options), group
    assert "Examples:" in proc.stdout and "python search.py search/scorer=logme" in proc.stdout
