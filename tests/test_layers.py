"""The import picture holds: Hydra stays in the front layer, the engine never imports the front layer, no module
imports another package's private module, and bench/ imports only public names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "alsatian_pl"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, names)`` of every import in ``path`` (relative imports resolved against its package)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts)
    if package[-1] != "__init__":
        package = package[:-1]
    else:
        package = package[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.append((module, [a.name for a in node.names]))
    return out


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_only_the_front_layer_imports_hydra():
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in _modules(PACKAGE) if "app" not in p.relative_to(PACKAGE).parts
                 for m, _ in _imports(p) if m.split(".")[0] in ("hydra", "omegaconf")]
    assert not offenders, offenders


def test_the_engine_never_imports_the_front_layer():
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in _modules(PACKAGE) if "app" not in p.relative_to(PACKAGE).parts
                 for m, _ in _imports(p) if m == "alsatian_pl.app" or m.startswith("alsatian_pl.app.")]
    assert not offenders, offenders


def test_no_module_imports_another_packages_private_module():
    """A private module (``_name``) is imported only from its own package; a private name only within its package."""
    offenders = []
    for path in _modules(PACKAGE):
        home = ".".join(path.relative_to(ROOT).parts[:-1])
        for module, names in _imports(path):
            parts = module.split(".")
            if parts[0] != "alsatian_pl":
                continue
            private = next((i for i, x in enumerate(parts) if _private(x)), None)
            if private is not None and ".".join(parts[:private]) != home:
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
            owner = module if (ROOT / Path(*parts) / "__init__.py").exists() else ".".join(parts[:-1])
            offenders += [f"{path.relative_to(ROOT)}: {module}.{n}" for n in names if _private(n) and owner != home]
    assert not offenders, offenders


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_bench_imports_only_public_names():
    offenders = [f"{p.relative_to(ROOT)}: {m} {names}" for p in _modules(ROOT / "bench")
                 for m, names in _imports(p) if m.split(".")[0] == "alsatian_pl"
                 and (any(x.startswith("_") for x in m.split(".")) or any(n.startswith("_") for n in names))]
    assert not offenders, offenders


def test_bench_patches_no_package_internals():
    """bench/ measures a search through its callbacks, never by replacing the package's functions."""
    offenders = []
    for path in _modules(ROOT / "bench"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} setattr")
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id[:1].isupper():
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {t.value.id}.{t.attr} = ...")
    assert not offenders, offenders
