"""Entrypoint of every newsclf image: ``NAME_FILE=/path`` sets ``NAME`` from that file, then the
role's command replaces this process.

Secrets (API keys, a Redis URL with its password, Flower's login) then travel as files, e.g.
compose or Kubernetes secrets under ``/run/secrets``, never as plain environment values visible
in ``docker inspect``. Only ``NEWSCLF_*`` settings and ``FLOWER_BASIC_AUTH`` are read this way,
so an unrelated ``*_FILE`` variable of a base image keeps its meaning. When both ``NAME`` and
``NAME_FILE`` are set the file wins (a secrets override on top of a compose file that sets a
default), and a line on stderr says so.

Usage: ``python entrypoint.py COMMAND [ARG ...]``
"""

from __future__ import annotations

import os
import sys

SUFFIX = "_FILE"
EXTRA_NAMES = ("FLOWER_BASIC_AUTH",)
EXIT_USAGE = 2


class SecretFileError(Exception):
    """A ``*_FILE`` variable that cannot be honoured."""


def resolve(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with every ``NAME_FILE`` replaced by ``NAME`` = the file's text (one
    trailing newline dropped, as editors and ``echo`` add it)."""
    out = dict(environ)
    for key, path in environ.items():
        name = key[: -len(SUFFIX)]
        if not key.endswith(SUFFIX) or not (name.startswith("NEWSCLF_") or name in EXTRA_NAMES):
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read()
        except OSError as exc:
            raise SecretFileError(f"{key}={path}: {exc.strerror or exc}") from exc
        if name in environ:
            print(f"entrypoint: {key} overrides {name}", file=sys.stderr)
        out[name] = value[:-1] if value.endswith("\n") else value
        del out[key]
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(f"error: {__doc__.strip().splitlines()[-1]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        environ = resolve(dict(os.environ))
    except SecretFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    os.execvpe(argv[0], argv, environ)
    return 0  # not reached: exec replaced the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
