"""Small calls to a recurrent export, with the numeric half compiled by XLA.

In a call of a few texts, a recurrent layer's time is mostly TensorFlow's fixed cost per loop
step, not arithmetic; XLA compiles the whole loop into one kernel and cuts a gateway-sized call
to about a third (docs/gateway.md, "XLA for small calls").  String ops cannot be compiled, so masked recurrent
exports carry their two halves as extra signatures (``training.layout.ENCODE_SIGNATURE``,
``IDS_SIGNATURE``): the ids come from the first as usual and only the second is compiled here.
The SavedModel itself holds nothing XLA-specific, so TF Serving serves it unchanged.

XLA compiles once per input shape, so the ids are padded to a few shapes: rows to a power of
two, columns to a multiple of :data:`LENGTH_STEP` (at most ``max_length``).  Padding is masked,
so the answers are the same up to float rounding.  Large calls gain nothing and keep the plain
graph.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from training.layout import ENCODE_SIGNATURE, IDS_KEY, IDS_SIGNATURE, INPUT_KEY, OUTPUT_KEY

log = logging.getLogger(__name__)

LENGTH_STEP = 32


def padded_shape(rows: int, columns: int, max_length: int) -> tuple[int, int]:
    """The compiled shape a ``rows`` x ``columns`` batch of ids is padded to."""
    rows_to = 1 << max(0, rows - 1).bit_length()
    columns_to = max(LENGTH_STEP, -(-columns // LENGTH_STEP) * LENGTH_STEP)
    return rows_to, max(columns, min(columns_to, max_length))


def all_shapes(max_batch: int, max_length: int) -> list[tuple[int, int]]:
    """Every padded shape of calls of 1..``max_batch`` texts, fewest rows and columns first."""
    return sorted({padded_shape(rows, columns, max_length)
                   for rows in range(1, max_batch + 1) for columns in range(1, max_length + 1)})


class CompiledHalves:
    """``run(texts)`` through the export's halves: ids, then the numeric half XLA-compiled for
    the padded shape, or uncompiled while that shape is not compiled yet; ``None`` when the
    call is too large for it (the caller then uses the serving signature).

    Every shape is compiled once, on a thread of its own that the first small call starts, so no
    request waits for the compiler (a fraction of a second per shape, about half a minute for a
    model with ``max_length`` 300 and 32 rows): until its shape is ready a call runs uncompiled,
    with the same answers.  Compiling only the shapes calls have needed made the first minutes
    slower than no XLA at all: each new shape's compile took the cores from the calls.
    """

    def __init__(self, loaded, max_batch: int, padding: str, max_length: int, name: str):
        import tensorflow as tf

        self._tf = tf
        self._encode = loaded.signatures[ENCODE_SIGNATURE]
        classify_ids = loaded.signatures[IDS_SIGNATURE]
        self._plain = lambda ids: classify_ids(**{IDS_KEY: ids})[OUTPUT_KEY]
        # one trace for every shape; XLA keeps one compiled kernel per concrete shape
        self._xla_function = tf.function(self._plain, jit_compile=True,
                                     input_signature=[tf.TensorSpec([None, None], tf.int32)])
        self.max_batch = max_batch
        self.padding = padding
        self.max_length = max_length
        self.name = name
        self._ready: set[tuple[int, int]] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._compiler: threading.Thread | None = None

    @classmethod
    def of(cls, loaded, max_batch: int, settings: dict, name: str) -> CompiledHalves | None:
        """The compiled runner of a loaded export, or None when it has no halves or it is off."""
        max_length = settings.get("max_length")
        if (max_batch <= 0 or not isinstance(max_length, int) or max_length < 1
                or not {ENCODE_SIGNATURE, IDS_SIGNATURE} <= set(loaded.signatures)):
            return None
        return cls(loaded, max_batch, "pre" if settings.get("padding") == "pre" else "post", max_length, name)

    def start(self) -> None:
        """Compile every shape on a thread of this runner's own (once; the first small call does)."""
        with self._lock:
            if self._compiler is None:
                self._compiler = threading.Thread(target=self._compile_all, name=f"xla-{self.name}", daemon=True)
                self._compiler.start()

    def run(self, tensor) -> np.ndarray | None:
        """Probabilities of the texts in ``tensor`` (a string vector), or None to use the plain graph."""
        rows = int(tensor.shape[0])
        if not 0 < rows <= self.max_batch or self._stop.is_set():
            return None
        tf = self._tf
        ids = self._encode(**{INPUT_KEY: tensor})[IDS_KEY]
        shape = padded_shape(rows, int(ids.shape[1]), self.max_length)
        if shape not in self._ready:
            if self._compiler is None:  # a process whose calls are all large (a batch worker) never compiles
                self.start()
            return self._plain(ids).numpy()
        extra = shape[1] - int(ids.shape[1])
        ids = tf.pad(ids, [[0, shape[0] - rows], [extra, 0] if self.padding == "pre" else [0, extra]])
        return self._xla_function(ids).numpy()[:rows]

    def compiled_shapes(self) -> set[tuple[int, int]]:
        return set(self._ready)

    def close(self) -> None:
        """Stop compiling (a shape being compiled finishes) and stop running compiled."""
        self._stop.set()

    def _compile_all(self) -> None:
        tf = self._tf
        for shape in all_shapes(self.max_batch, self.max_length):
            if self._stop.is_set():
                return
            try:
                self._xla_function(tf.zeros(shape, tf.int32))  # fully masked rows: only the shape matters
            except Exception as exc:  # an op XLA cannot compile: this model keeps the plain graph
                log.warning("model %s: XLA cannot compile its graph, serving it uncompiled: %s", self.name,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self._stop.set()
                return
            self._ready.add(shape)
        log.info("model %s: XLA compiled %d batch shapes", self.name, len(self._ready))
