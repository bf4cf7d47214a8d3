"""Print pyproject.toml's requirement lines (the base dependencies, or the named extras) for pip.

The images install what this prints together with ``deploy/constraints.txt``, so pyproject.toml
stays the one home of what the product depends on and the constraints pin the exact versions.

Usage: ``python deploy/requirements.py pyproject.toml [EXTRA ...] > requirements.txt``
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """Base dependencies without extras; only the extras' own lines when extras are named."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    if not extras:
        return list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:
        raise SystemExit(f"{pyproject} has no extra {', '.join(unknown)}; it has {', '.join(sorted(optional))}")
    return [line for name in extras for line in optional[name]]


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    print("\n".join(requirements(Path(argv[0]), argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
