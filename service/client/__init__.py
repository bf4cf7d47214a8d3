"""``newsclf`` / ``python -m service.client``: classify text and manage jobs over gRPC or HTTP.

Subcommands come from ``classify`` (classify, models) and ``jobs`` (submit, status, wait,
cancel, jobs); each sets ``func(args) -> int``. Both talk to the gateway through one
``transport.Transport``.
"""

from __future__ import annotations

import argparse
import sys

from service.client import classify, jobs
from service.client.transport import ClientError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsclf", description="Client of the newsclf gateway.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (classify, jobs):
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
