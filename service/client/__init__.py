"""``newsclf`` / ``python -m service.client``: classify text and manage jobs over gRPC or HTTP.

Subcommands come from modules exposing ``add_commands(subparsers)``: ``classify`` (this
package) and, when installed, ``service.client.jobs``. Each subcommand sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from service.client.transport import ClientError

COMMAND_MODULES = ("service.client.classify", "service.client.jobs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsclf", description="Client of the newsclf gateway.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # optional command set not installed
            raise
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ClientError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


__all__ = ["main", "build_parser", "ClientError"]
