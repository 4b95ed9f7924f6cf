"""The one place where request, queue and inference timings are reported.

The REST layer calls :meth:`Observer.request_finished` once per HTTP request; the model runner calls
:meth:`Observer.batch_finished` once per handler call. A metrics exporter subclasses
:class:`Observer` and is installed with :func:`set_observer` before the server starts.
"""

from __future__ import annotations

from collections.abc import Sequence


class Observer:
    """No-op base: override what you need. Called on the event loop thread; keep it cheap."""

    def request_finished(self, *, endpoint: str, model: str | None, status: int, seconds: float) -> None:
        """``endpoint``: a route label such as ``v1_predict``, ``v2_infer``, ``predictions``, ``health``."""

    def batch_finished(
        self,
        *,
        model: str,
        rows: int,
        requests: int,
        queue_seconds: Sequence[float],
        inference_seconds: float,
        ok: bool,
    ) -> None:
        """One handler call: its batch size in rows and requests, each request's time in the queue,
        the handler's wall time, and whether it succeeded."""

    def model_loaded(self, *, model: str, seconds: float, ok: bool) -> None:
        """A model finished loading (or failed to)."""


_observer = Observer()


def get_observer() -> Observer:
    return _observer


def set_observer(observer: Observer) -> None:
    global _observer
    _observer = observer
