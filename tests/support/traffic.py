"""Background request traffic for tests that change the serving state while clients keep calling."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Traffic:
    """``threads`` loops calling ``call()`` until stopped; keeps every answer and every failure."""

    def __init__(self, call: Callable[[], object], threads: int = 3):
        self._call = call
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]
        self.answers: list[object] = []
        self.failures: list[BaseException] = []

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self._call())
            except BaseException as exc:  # any failure is what the test looks for
                self.failures.append(exc)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
