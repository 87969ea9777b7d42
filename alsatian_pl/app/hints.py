"""Errors that teach the config: an override that belongs elsewhere gets one line naming the override to use.

* a group member overridden without the group: ``search.scorer.name=logme`` keeps the linear probe's options and
  only renames it; ``dataset.name=cars`` keeps Fashion-MNIST's; the switch is ``search/scorer=logme``,
  ``dataset=cars``;
* a group addressed as a key: ``search.scorer=logme`` or ``scorer=logme`` -> ``search/scorer=logme``; an option
  as a key: ``callbacks.rounds=true`` -> ``callbacks=rounds``;
* an option of another member of the group: ``search.scorer.kwargs.k=3`` (or ``++...``) while the scorer is the
  linear probe -> ``search/scorer=knn search.scorer.kwargs.k=3``;
* a key of another group: ``dataset.batch_size=32`` -> ``search.batch_size=32`` (or ``finetune.batch_size``);
* a misspelt key: ``search.cache_budgt=1GB`` -> ``search.cache_budget=1GB``.

The config tree is read from the YAML files of ``conf/`` (every group, every option), so the hints follow it.
"""

from __future__ import annotations

import difflib
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from omegaconf import OmegaConf

from ..errors import ConfigError

__all__ = ["config_tree", "hint", "check_overrides", "check_run", "compose_hint", "split_override"]

SKIP = ("hydra",)  # Hydra's own group: its options are Hydra's, not the user's
OPEN = ("trainer", "logger", "callbacks", "models")  # take keys no option lists (+trainer.<arg>, +models.where...)
CLOSED = ("search/scorer",)  # a composed run refuses another member's keys here (the scorer takes no others)


@lru_cache(maxsize=4)
def config_tree(conf: str) -> dict[str, dict[str, frozenset[str]]]:
    """Group (``search/scorer``) -> option (``knn``) -> its dotted keys relative to the group's package
    (``kwargs``, ``kwargs.k``, ``name``); an option's defaults from its own group (``finetune/full``: ``default``)
    are merged in."""
    root, tree, bases = Path(conf), {}, {}
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if len(rel.parts) < 2 or rel.parts[0] in SKIP:
            continue
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        node = node if isinstance(node, dict) else {}
        group = "/".join(rel.parts[:-1])
        bases[(group, path.stem)] = [d for d in node.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
        tree.setdefault(group, {})[path.stem] = frozenset(_keys(node))
    for (group, option), names in bases.items():
        for name in names:
            tree[group][option] |= tree[group].get(name, frozenset())
    return tree


def _keys(node: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")


def split_override(override: str) -> tuple[str, str, str]:
    """``'++search.scorer.kwargs.k=3'`` -> ``('++', 'search.scorer.kwargs.k', '3')``."""
    key, _, value = override.partition("=")
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    return prefix, key[len(prefix):], value


def _package(group: str) -> str:
    return group.replace("/", ".")


def hint(override: str, tree: Mapping[str, Mapping[str, frozenset[str]]],
         choices: Mapping[str, Any] | None = None, composed: bool = False) -> str | None:
    """The one line that names the override to use instead of ``override``, or None when it is where it belongs.
    ``composed``: Hydra applied it (a run checks it; only renamed members and the scorer's options are refused
    then); else Hydra could not (a key the chosen configs lack)."""
    prefix, key, value = split_override(override)
    if "/" in key or prefix == "~":
        return None
    choices = choices or {}
    checks = (_member_without_group, _other_member) if composed else (
        _group_as_key, _option_as_key, _member_without_group, _other_member, _other_group, _misspelt)
    for check in checks:
        if composed and check is _other_member and _longest_group(key, tree) not in CLOSED:
            continue
        line = check(key, value, override, tree, choices)
        if line:
            return line
    return None


def _group_as_key(key: str, value: str, override: str, tree: Any, choices: Mapping[str, Any]) -> str | None:
    """``search.scorer=logme`` / ``scorer=logme``: a group chosen as if it were a key."""
    for group in tree:
        if key in (_package(group), group.rsplit("/", 1)[-1]) and key != group and value in tree[group]:
            return f"{override}: {key} is the config group {group}; choose its option with {group}={value}"
    return None


def _option_as_key(key: str, value: str, override: str, tree: Any, choices: Mapping[str, Any]) -> str | None:
    """``callbacks.rounds=true``, ``search.shift=true``, ``trainer.smoke=true``: an option used as a key."""
    group, _, option = key.rpartition(".")
    group = group.replace(".", "/")
    if option in tree.get(group, {}):  # (Hydra could not apply it: the chosen option lacks this key)
        return f"{override}: {option} is an option of the config group {group}; choose it with {group}={option}"
    return None


def _member_without_group(key: str, value: str, override: str, tree: Any, choices: Mapping[str, Any]
                          ) -> str | None:
    """``search.scorer.name=logme``: renames the chosen member and keeps its options instead of switching."""
    for group, options in tree.items():
        current = choices.get(group)
        if key == f"{_package(group)}.name" and value in options and value != current:
            kept = f" of {group}={current}" if current else ""
            return (f"{override} renames the config and keeps the options{kept}; to switch, choose the group "
                    f"option: {group}={value}")
    return None


def _longest_group(key: str, tree: Any) -> str | None:
    owners = [g for g in tree if key.startswith(_package(g) + ".")]
    return max(owners, key=len, default=None)


def _other_member(key: str, value: str, override: str, tree: Any, choices: Mapping[str, Any]) -> str | None:
    """``search.scorer.kwargs.k=3`` with the linear probe: a key of another option of the same group."""
    group = _longest_group(key, tree)
    if group is None or group.split("/")[0] in OPEN:
        return None
    rest, current = key[len(_package(group)) + 1:], choices.get(group)
    owners = [option for option, keys in tree[group].items() if rest in keys]
    if not owners or current in owners or (current is None and len(owners) == len(tree[group])):
        return None
    now = f", not of {group}={current}" if current else ""
    return (f"{key} belongs to {group}={'|'.join(owners)}{now}: choose that {group} with it, e.g. "
            f"{group}={owners[0]} {override.lstrip('+')}")


def _other_group(key: str, value: str, override: str, tree: Any, choices: Mapping[str, Any]) -> str | None:
    """``dataset.batch_size=32``: a key that lives in another group."""
    group = _longest_group(key, tree)
    if group is None or group.split("/")[0] in OPEN:
        return None
    rest = key[len(_package(group)) + 1:]
    if any(rest in keys for keys in tree[group].values()):
        return None
    homes = [g for g in tree if g != group and any(rest in keys for keys in tree[g].values())]
    if not homes:
        return None
    there = " or ".join(f"{_package(g)}.{rest}={value}" for g in homes[:3])
    return f"{key} is not a key of {group} but of {', '.join(homes[:3])}: {there}"


def _misspelt(key: str, value: str, override: str, tree: Any, choices: Mapping[str, Any]) -> str | None:
    """``search.cache_budgt=1GB``: a key close to one of its group's."""
    group = _longest_group(key, tree)
    if group is None:
        return None
    rest = key[len(_package(group)) + 1:]
    known = sorted(set().union(*tree[group].values()))
    if rest in known:  # another option's key in a group that takes any key: Hydra's advice (+key=value) stands
        return None
    close = difflib.get_close_matches(rest, known, n=1, cutoff=0.75)
    if not close:
        return None
    new = f" (+{key}={value} adds it as a new key)" if group.split("/")[0] in OPEN else ""
    return f"{key} is not a key of {group}: did you mean {_package(group)}.{close[0]}={value}?{new}"


def check_overrides(overrides: Sequence[str], choices: Mapping[str, Any], conf: str | Path) -> None:
    """ConfigError with the first override's hint (a composed run: the overrides Hydra accepted, its choices)."""
    tree = config_tree(str(conf))
    for override in overrides:
        line = hint(override, tree, choices, composed=True)
        if line:
            raise ConfigError(line)


def check_run() -> None:
    """:func:`check_overrides` for the running Hydra job (search.py, train.py); nothing outside one."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    conf = next((s.path for s in hc.runtime.config_sources if s.provider == "main" and s.schema == "file"), None)
    if conf:
        check_overrides(list(hc.overrides.task), dict(hc.runtime.choices), conf)


def compose_hint(message: str, conf: str | Path | None = None, argv: Sequence[str] | None = None) -> str | None:
    """The line for Hydra's "Could not override 'KEY'" (a key the chosen configs do not hold), from the override
    on the command line (``argv``, default ``sys.argv``) and the config tree of ``conf`` (default: ``conf/`` beside
    the script, where ``config_path="conf"`` points)."""
    found = re.search(r"Could not override '([^']+)'", message)
    argv = list(sys.argv[1:] if argv is None else argv)
    conf = Path(conf) if conf is not None else Path(sys.argv[0]).resolve().parent / "conf"
    if not found or not conf.is_dir():
        return None
    key = found.group(1)
    override = next((a for a in argv if split_override(a)[1] == key and "=" in a), f"{key}=...")
    tree = config_tree(str(conf))
    choices = {k: v for k, _, v in (a.partition("=") for a in argv) if k in tree}
    return hint(override, tree, choices)
