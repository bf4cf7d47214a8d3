"""``python -m service serve``: the gateway (gRPC + HTTP) over the configured model backend.

Settings come from the environment once (``NEWSCLF_*``, see ``service.settings``). SIGTERM or
SIGINT stops it cleanly: health turns NOT_SERVING and ``/readyz`` 503 at once, both ports keep
serving for ``NEWSCLF_SHUTDOWN_DRAIN_S``, then new calls are refused, calls in flight finish within
``NEWSCLF_SHUTDOWN_GRACE_S``, and the backend is closed. Serving without API keys on a non-loopback
address needs ``NEWSCLF_ALLOW_OPEN=true``. With ``NEWSCLF_GRPC_PROCESSES`` above 1 it starts that
many processes serving gRPC on the one port (``service.processes``) and stops them with itself.

A startup it cannot make is one line on stderr, no traceback: exit status 2 when the settings are
wrong (a bad value, half a TLS setup, an unreadable certificate, key or model root), 1 when the
settings are fine but the machine is not (a port already in use).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import ssl
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from jobs.manager import JobManager
from jobs.settings import JobSettings
from service.settings import GatewaySettings

log = logging.getLogger("service")

CONFIG_ERROR, RUNTIME_ERROR = 2, 1


class StartupError(Exception):
    """The gateway cannot start; ``message`` says why in one line, ``status`` is the exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


def settings_error(exc: ValidationError) -> StartupError:
    """One line naming every bad setting by its environment variable."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        names = [f"NEWSCLF_{str(part).upper()}" for part in error["loc"][:1]]
        problems.append(": ".join([*names, message]))
    return StartupError(f"invalid settings: {'; '.join(problems)}", CONFIG_ERROR)


def check_readable(settings: GatewaySettings) -> None:
    """Fail now, not on the first request or handshake, when a configured file cannot be used."""
    root = settings.model_root
    if not root.is_dir():
        reason = "does not exist" if not root.exists() else "is not a folder"
        raise StartupError(f"model root {root} (NEWSCLF_MODEL_ROOT) {reason}", CONFIG_ERROR)
    try:
        os.listdir(root)
    except OSError as exc:
        raise StartupError(f"cannot read model root {root} (NEWSCLF_MODEL_ROOT): {exc.strerror}",
                           CONFIG_ERROR) from None
    if settings.tls_cert is None or settings.tls_key is None:  # the settings allow both or neither
        return
    for variable, path in (("NEWSCLF_TLS_CERT", settings.tls_cert), ("NEWSCLF_TLS_KEY", settings.tls_key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read {path} ({variable}): {exc.strerror}", CONFIG_ERROR) from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    except ssl.SSLError as exc:
        raise StartupError(f"{settings.tls_cert} (NEWSCLF_TLS_CERT) and {settings.tls_key} (NEWSCLF_TLS_KEY) "
                           f"are not a PEM certificate and its key: {exc.reason or exc}", CONFIG_ERROR) from None


def check_exposure(settings: GatewaySettings) -> None:
    """Refuse to serve the API without keys beyond loopback unless that is asked for, and say so
    loudly when it is."""
    if not settings.runs_open:
        return
    if not settings.allow_open:
        raise StartupError(f"NEWSCLF_HOST={settings.host} is not a loopback address and NEWSCLF_API_KEYS is empty: "
                           "set API keys, bind 127.0.0.1, or set NEWSCLF_ALLOW_OPEN=true to serve without "
                           "authentication", CONFIG_ERROR)
    log.warning("running open: anyone who reaches %s can classify and submit jobs without an API key "
                "(NEWSCLF_ALLOW_OPEN=true, NEWSCLF_API_KEYS empty)", settings.host)


def job_manager_or_none(enabled: bool) -> JobManager | None:
    """The batch-job manager when the job API is wanted, else None."""
    if not enabled:
        return None
    try:
        return JobManager(JobSettings())
    except ValidationError as exc:
        raise settings_error(exc) from None


def load_settings() -> GatewaySettings:
    try:
        return GatewaySettings()
    except ValidationError as exc:
        raise settings_error(exc) from None


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    return stop


def start_gateway(backend, settings: GatewaySettings, job_manager: JobManager | None, **options):
    """The gateway over ``backend``; on failure the backend and job manager are closed."""
    from service.gateway import Gateway

    try:
        return Gateway(backend, settings, job_manager, **options)
    except Exception as exc:
        backend.close()
        if job_manager is not None:
            job_manager.close()
        if isinstance(exc, OSError):  # a port in use, or a host address this machine does not have
            raise StartupError(exc.strerror or str(exc), RUNTIME_ERROR) from None
        raise


def serve(args: argparse.Namespace) -> int:
    from scoring.backends import create_backend
    from service.grpc_api.server import check_port_free
    from service.metrics import share_between_processes
    from service.processes import GrpcProcesses, metrics_folder

    settings = load_settings()
    check_readable(settings)
    check_exposure(settings)
    several = settings.grpc_processes > 1
    metrics_dir = None
    if several:
        try:
            check_port_free(settings.host, settings.grpc_port)  # the port is shared with our own processes only
        except OSError as exc:
            raise StartupError(str(exc), RUNTIME_ERROR) from None
        metrics_dir = metrics_folder()
        share_between_processes(metrics_dir)
    job_manager = job_manager_or_none(not args.no_jobs)
    stop = stop_on_signals()
    backend = create_backend(settings)
    try:
        gateway = start_gateway(backend, settings, job_manager, share_grpc_port=several, metrics_dir=metrics_dir)
    except BaseException:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    log.info("gateway up: gRPC %s:%d, HTTP %s:%d, %s backend", settings.host, gateway.grpc_port,
             settings.host, gateway.http_port, settings.backend_kind)
    others = None
    if several:
        others = GrpcProcesses(settings.grpc_processes, gateway.grpc_port, metrics_dir, jobs=not args.no_jobs)
        others.start()
    while not stop.wait(1.0):
        if others is not None:
            others.watch()
    log.info("shutting down (drain %.1fs, grace %.1fs)", settings.shutdown_drain_s, settings.shutdown_grace_s)
    if others is not None:
        others.signal_stop()
    gateway.stop()
    if others is not None:
        others.wait(timeout=settings.shutdown_drain_s + settings.shutdown_grace_s + 10)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if job_manager is not None:
        job_manager.close()
    backend.close()
    return 0


def serve_grpc_process(args: argparse.Namespace) -> int:
    """One of ``serve``'s extra gRPC processes (``service.processes``): it binds the shared port
    once its backend is ready, so the kernel never hands a connection to a process still loading."""
    from scoring.backends import create_backend
    from service.metrics import share_between_processes
    from service.processes import parent_gone

    settings = load_settings()
    share_between_processes(args.metrics_dir)
    stop = stop_on_signals()
    backend = create_backend(settings)
    while not backend.ready():
        if stop.wait(0.5) or parent_gone(args.parent):
            backend.close()
            return 0
    job_manager = job_manager_or_none(not args.no_jobs)
    gateway = start_gateway(backend, settings, job_manager, grpc_port=args.port,
                            http=False, share_grpc_port=True, metrics_dir=args.metrics_dir)
    log.info("gRPC process up (pid %d): %s:%d", os.getpid(), settings.host, gateway.grpc_port)
    while not stop.wait(1.0):
        if parent_gone(args.parent):
            log.warning("the gateway's first process is gone; stopping")
            break
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
    process_parser = commands.add_parser("grpc-process", help="internal: one of serve's extra gRPC processes "
                                         "(NEWSCLF_GRPC_PROCESSES), started by serve itself")
    process_parser.add_argument("--port", type=int, required=True)
    process_parser.add_argument("--metrics-dir", type=Path, required=True)
    process_parser.add_argument("--parent", type=int, required=True)
    process_parser.add_argument("--no-jobs", action="store_true")
    process_parser.set_defaults(func=serve_grpc_process)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except StartupError as exc:
        print(f"{parser.prog} {args.command}: error: {exc.message}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
