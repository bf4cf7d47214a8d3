"""``python -m service serve``: the gateway (gRPC + HTTP) over the configured model backend.

Settings come from the environment once (``NEWSCLF_*``, see ``service.settings``). SIGTERM or
SIGINT stops it cleanly: health turns NOT_SERVING, new calls are refused, calls in flight finish
within ``NEWSCLF_SHUTDOWN_GRACE_S``, then the backend is closed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from service.settings import GatewaySettings

log = logging.getLogger("service")

JOB_MODULES = {"worker", "worker.jobs", "worker.settings", "service.grpc_api.jobs", "service.http_api.jobs"}


def job_manager_or_none(enabled: bool):
    """The batch-job manager when the job API is installed and wanted, else None."""
    if not enabled:
        return None
    try:
        import service.grpc_api.jobs  # noqa: F401  (presence check)
        import service.http_api.jobs  # noqa: F401
        from worker.jobs import JobManager
        from worker.settings import JobSettings
    except ModuleNotFoundError as exc:
        if exc.name not in JOB_MODULES:
            raise
        log.info("job API not installed (%s); serving classification only", exc.name)
        return None
    return JobManager(JobSettings())


def serve(args: argparse.Namespace) -> int:
    from service.backends import create_backend
    from service.gateway import Gateway

    settings = GatewaySettings()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    backend = create_backend(settings)
    job_manager = job_manager_or_none(not args.no_jobs)
    try:
        gateway = Gateway(backend, settings, job_manager)
    except Exception:
        backend.close()
        raise
    log.info("gateway up: gRPC %s:%d, HTTP %s:%d, %s backend", settings.host, gateway.grpc_port,
             settings.host, gateway.http_port, settings.backend_kind)
    while not stop.wait(1.0):
        pass
    log.info("shutting down (grace %.1fs)", settings.shutdown_grace_s)
    gateway.stop()
    if job_manager is not None:
        job_manager.close()
    backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="newsclf gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the gRPC and HTTP APIs (settings from NEWSCLF_* env)")
    serve_parser.add_argument("--no-jobs", action="store_true", help="do not mount the batch-job API")
    serve_parser.set_defaults(func=serve)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
