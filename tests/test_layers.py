"""The packages form layers that import downward only (see README's component table).

Every import statement counts, including the lazy ones inside functions, so a cycle cannot hide
behind an import deferred to call time.
"""

from __future__ import annotations

import ast
from itertools import combinations
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What each product package may import from the others; anything not listed is refused.
ALLOWED = {
    "newsclf": set(),                                   # generated protobuf modules
    "training": set(),                                  # corpus, models, export, layout contract
    "scoring": {"newsclf", "training"},                 # errors, limits, ranking, backends
    "jobs": {"scoring", "training"},                    # job model, store, manager, readers
    "service": {"newsclf", "scoring", "jobs", "training"},  # the gateway
    "worker": {"scoring", "jobs", "training"},          # Celery tasks
}


def imported_packages(package: str, repo: Path = REPO) -> dict[str, set[str]]:
    """Top-level product packages imported by ``package``, with the files that import each."""
    found: dict[str, set[str]] = {}
    for path in sorted((repo / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(repo)))
    return found


def test_every_package_imports_only_the_layers_below_it():
    wrong = {}
    for package, allowed in ALLOWED.items():
        for target, files in imported_packages(package).items():
            if target not in allowed:
                wrong[f"{package} -> {target}"] = sorted(files)
    assert not wrong, f"imports against the layering: {wrong}"


def test_no_two_packages_import_each_other():
    edges = {package: set(imported_packages(package)) for package in ALLOWED}
    both_ways = [(a, b) for a, b in combinations(ALLOWED, 2) if b in edges[a] and a in edges[b]]
    assert not both_ways


def test_the_check_sees_lazy_imports(tmp_path):
    """A deferred import inside a function still counts (the check cannot pass by not looking)."""
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "x.py").write_text("def f():\n    from service.core import X\n")
    assert imported_packages("training", tmp_path) == {"service": {"training/x.py"}}
