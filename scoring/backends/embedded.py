"""Runs the exported SavedModels in this process, following the model root as it changes.

Per model it serves the newest version plus every version a version label points at (the same
policy ``ModelRoot.models_config`` gives TF Serving). A poller re-reads the root; a new version
is loaded and warmed *before* it is swapped in, and a version that leaves the policy is dropped
only once the calls already running on it have returned, so a rollout loses no request.

TensorFlow is imported lazily (first load), so importing this module is cheap, and a process
that forks before using it (a Celery worker) builds its own instance, threads and TF runtime
after the fork.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scoring.backends.base import Backend, BackendResult, ModelInfo, ModelVersion, check_call
from scoring.backends.xla import CompiledHalves
from scoring.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    quote,
)
from scoring.settings import BackendSettings
from training.layout import EXTRA_DIR, WARMUP_FILE, ModelRoot
from training.savedmodel import load as load_savedmodel

log = logging.getLogger(__name__)

MAX_WARMUP_RECORDS = 1000  # TF Serving's own cap on replayed warmup records


def read_warmup_requests(path: Path) -> list:
    """The ``PredictRequest``s of a ``tf_serving_warmup_requests`` file (TFRecord of PredictionLog).

    Raises ``ValueError`` for a record that is not a predict log, like TF Serving refuses it.
    """
    import tensorflow as tf

    from scoring.backends.tfs_api import PredictionLog

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
        entry = PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path}: warmup record of type {entry.WhichOneof('log_type')!r}; "
                             "only predict_log is supported")
        requests.append(entry.predict_log.request)
    return requests


_TF_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "File ")


def _reason(exc) -> str:
    """The line of a TensorFlow error that says what went wrong, without the graph's node noise."""
    for line in exc.message.splitlines():
        text = line.strip()
        if text and not line[0].isspace() and not text.startswith(_TF_NOISE):
            return text
    return type(exc).__name__


def _domain_error(exc, info: ModelVersion) -> ServiceError:
    """A TensorFlow error raised while running a model, as the domain error a client can act on.

    Like TF Serving's status codes in the TF Serving backend: the input's fault is
    ``InvalidArgument``, running out of memory is ``ResourceExhausted``, any other failure of
    the runtime is ``Unavailable`` (the model could not answer now).
    """
    import tensorflow as tf

    where = f"model {info.name!r} v{info.version}"
    if isinstance(exc, (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError)):
        return InvalidArgument(f"{where} cannot score this input: {_reason(exc)}")
    if isinstance(exc, tf.errors.ResourceExhaustedError):
        return ResourceExhausted(f"{where} ran out of resources: {_reason(exc)}")
    if isinstance(exc, tf.errors.DeadlineExceededError):
        return DeadlineExceeded(f"{where} ran out of time: {_reason(exc)}")
    return Unavailable(f"{where} failed ({type(exc).__name__}): {_reason(exc)}")


@functools.cache
def use_intra_op_threads(threads: int | None) -> None:
    """Let one TensorFlow op use ``threads`` threads in this process (None or 0: TensorFlow's default).

    TensorFlow fixes the number when its runtime starts; a process whose runtime already runs
    keeps what it has, with one warning (a call per process and number does the work).
    """
    if not threads:
        return
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        log.warning("TensorFlow already runs in this process: NEWSCLF_TF_INTRA_OP_THREADS=%d not applied", threads)


class _Servable:
    """One loaded version; counts calls in flight so it is released only after the last one."""

    def __init__(self, info: ModelVersion, path: Path, xla_max_batch: int = 0):
        import tensorflow as tf

        self._tf = tf
        self.info = info
        meta = info.metadata
        self._loaded = load_savedmodel(path)
        if meta.signature not in self._loaded.signatures:
            raise ValueError(f"{path} has no signature {meta.signature!r}")
        self._fn = self._loaded.signatures[meta.signature]
        self._compiled = CompiledHalves.of(self._loaded, xla_max_batch, meta.settings, info.name)
        self.loaded_ref = weakref.ref(self._loaded)
        self.in_flight = 0
        self.retired = False

    def run(self, texts: Sequence[str], *, compiled: bool = True) -> np.ndarray:
        """Probabilities of ``texts``; small calls through the XLA-compiled half unless ``compiled`` is off."""
        meta = self.info.metadata
        tensor = self._tf.constant(list(texts), dtype=self._tf.string)
        try:
            small = self._compiled.run(tensor) if compiled and self._compiled is not None else None
            probabilities = (small if small is not None
                             else self._fn(**{meta.input_key: tensor})[meta.output_key].numpy())
        except self._tf.errors.OpError as exc:
            raise _domain_error(exc, self.info) from None
        if probabilities.shape != (len(texts), len(meta.labels)):
            raise Unavailable(f"model {self.info.name!r} v{self.info.version} answered shape "
                              f"{probabilities.shape}, expected ({len(texts)}, {len(meta.labels)})")
        return probabilities

    def warm_up(self, path: Path) -> int:
        """Replay the export's warmup requests, so the first real request is not the slow one."""
        if not path.is_file():
            return 0
        from scoring.backends.tfs_api import texts_of

        requests = read_warmup_requests(path)
        for request in requests:  # the serving graph only: warm-up alone must not start XLA compiles
            self.run(texts_of(request.inputs[self.info.metadata.input_key]), compiled=False)
        return len(requests)

    def unload(self) -> None:
        self._fn = None
        if self._compiled is not None:
            self._compiled.close()
        self._compiled = None
        self._loaded = None


class EmbeddedBackend(Backend):
    """SavedModels from ``settings.model_root``, loaded in-process and hot-swapped."""

    def __init__(self, settings: BackendSettings, *, poll: bool = True):
        self._root = ModelRoot(settings.model_root)
        self._interval = settings.model_poll_interval_s
        self._threads = settings.tf_intra_op_threads
        self._xla_max_batch = settings.xla_max_batch
        self._lock = threading.Lock()          # guards _served, _labels and in-flight counts
        self._refresh_lock = threading.Lock()  # one scan/load at a time
        self._served: dict[str, dict[int, _Servable]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._failed: dict[tuple[str, int], str] = {}
        self._failed_identity: dict[tuple[str, int], tuple[int, int]] = {}
        self._scanned = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._poller: threading.Thread | None = None
        if poll:
            self._poller = threading.Thread(target=self._poll, name="model-poller", daemon=True)
            self._poller.start()

    # -- loading -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the loaded set in line with the model root now (the poller calls this)."""
        with self._refresh_lock:
            current = self._served
            served: dict[str, dict[int, _Servable]] = {}
            labels: dict[str, dict[str, int]] = {}
            for model in self._root.models():
                labels[model] = self._root.version_labels(model)
                on_disk = set(self._root.versions(model))
                if not on_disk:  # removed between the two listings
                    continue
                wanted = {max(on_disk)} | (set(labels[model].values()) & on_disk)
                versions = {}
                for version in sorted(wanted):
                    servable = current.get(model, {}).get(version) or self._load(model, version)
                    if servable is not None:
                        versions[version] = servable
                if max(on_disk) not in versions:
                    self._fall_back(model, sorted(on_disk - wanted), current.get(model, {}), versions)
                if versions:
                    served[model] = versions
            self._swap(served, labels)
            self._scanned.set()

    def _fall_back(self, model: str, older: list[int], current: dict[int, _Servable],
                   versions: dict[int, _Servable]) -> None:
        """The newest version failed to load: keep what ran before, else the newest older one that loads."""
        if current:
            newest = max(current)
            versions.setdefault(newest, current[newest])
            return
        for version in reversed(older):
            servable = self._load(model, version)
            if servable is not None:
                versions[version] = servable
                return

    def _load(self, model: str, version: int) -> _Servable | None:
        path = self._root.version_dir(model, version)
        try:
            identity = (path.stat().st_ino, path.stat().st_mtime_ns)
        except FileNotFoundError:
            return None
        if self._failed_identity.get((model, version)) == identity:
            return None  # failed before and unchanged since: do not retry every poll
        started = time.perf_counter()
        use_intra_op_threads(self._threads)
        try:
            info = ModelVersion(model, version, self._root.read_metadata(model, version))
            servable = _Servable(info, path, self._xla_max_batch)
            warmed = servable.warm_up(path / EXTRA_DIR / WARMUP_FILE)
        except Exception as exc:  # a broken export must not stop the others from serving
            self._failed[(model, version)] = str(exc)
            self._failed_identity[(model, version)] = identity
            log.error("cannot load %s v%d from %s: %s", model, version, path, exc)
            return None
        self._failed.pop((model, version), None)
        log.info("loaded %s v%d in %.1fs (%d warmup requests)", model, version,
                 time.perf_counter() - started, warmed)
        return servable

    def _swap(self, served: dict[str, dict[int, _Servable]], labels: dict[str, dict[str, int]]) -> None:
        keep = {id(s) for versions in served.values() for s in versions.values()}
        with self._lock:
            old, self._served, self._labels = self._served, served, labels
            retired = [s for versions in old.values() for s in versions.values() if id(s) not in keep]
            idle = []
            for servable in retired:
                servable.retired = True
                if servable.in_flight == 0:
                    idle.append(servable)
        for servable in idle:
            self._unload(servable)

    @staticmethod
    def _unload(servable: _Servable) -> None:
        servable.unload()
        log.info("unloaded %s v%d", servable.info.name, servable.info.version)

    def _poll(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # the root may be briefly unreadable; try again next round
                log.exception("scanning model root %s failed", self._root.path)
            finally:
                self._scanned.set()
            if self._stop.wait(self._interval):
                return

    # -- serving -------------------------------------------------------------------------
    def _acquire(self, model: str, version: int | None, version_label: str | None,
                 timeout: float | None) -> _Servable:
        if self._poller is None and not self._scanned.is_set():
            self.refresh()
        elif not self._scanned.wait(timeout):
            raise Unavailable("models are still loading")
        with self._lock:
            if self._closed:
                raise Unavailable("the model backend is shut down")
            versions = self._served.get(model)
            if not versions:
                raise NotFound(f"model {model!r} is not served")
            if version_label is not None:
                version = self._labels.get(model, {}).get(version_label)
                if version is None:
                    raise NotFound(f"model {model!r} has no version label {quote(version_label)}")
            chosen = versions.get(version if version is not None else max(versions))
            if chosen is None:
                raise NotFound(f"model {model!r} version {version} is not served")
            chosen.in_flight += 1
            return chosen

    def _release(self, servable: _Servable) -> None:
        with self._lock:
            servable.in_flight -= 1
            idle = servable.retired and servable.in_flight == 0
        if idle:  # freeing a SavedModel takes a fraction of a second: not on this request's time
            threading.Thread(target=self._unload, args=(servable,), name="model-unload", daemon=True).start()

    def classify(self, texts: Sequence[str], model: str, version: int | None = None,
                 version_label: str | None = None, timeout: float | None = None) -> BackendResult:
        started = time.monotonic()
        check_call(texts, version, version_label)
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("deadline passed before the model was called")
        servable = self._acquire(model, version, version_label, timeout)
        try:
            if texts:
                probabilities = servable.run(texts)
            else:
                probabilities = np.zeros((0, len(servable.info.labels)), dtype=np.float32)
        finally:
            self._release(servable)
        if timeout is not None and time.monotonic() - started > timeout:
            raise DeadlineExceeded(f"model {model!r} took longer than {timeout:.3f}s")
        info = servable.info
        return BackendResult(info.name, info.version, info.labels, probabilities, info.metadata)

    def models(self) -> list[ModelInfo]:
        with self._lock:
            served, labels = self._served, self._labels
        return [ModelInfo(name, [versions[v].info for v in sorted(versions)], dict(labels.get(name, {})))
                for name, versions in sorted(served.items())]

    def ready(self, model: str | None = None) -> bool:
        if not self._scanned.is_set():
            return False
        with self._lock:
            served = self._served
        if model is not None:
            return bool(served.get(model))
        on_disk = self._root.models()
        return bool(on_disk) and all(served.get(name) for name in on_disk)

    def failures(self) -> dict[tuple[str, int], str]:
        """Versions that could not be loaded, with the reason (for logs and status pages)."""
        return dict(self._failed)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(timeout=60)
        with self._refresh_lock:
            self._swap({}, {})
