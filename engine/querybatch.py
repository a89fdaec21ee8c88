"""Text queries answered together: every query that reaches the loop in one iteration shares one product.

Under load many requests resume in the same event-loop iteration (a Redis batch answers them all at once).
Each group of them (one answer function, one model) is answered by one call of the endpoint's answer
function (``engine.service.images``/``related``), which ranks them all from one matrix product: a
matrix-matrix product reads the image (or word) matrix once for all of them, where one matrix-vector
product per query reads it each time. On the 8,052-image Flickr8k bundle that is 0.42 ms for one query
alone and 0.13 ms a query in a batch of 16, top-k included (``scripts/bench_knn.py --text-queries``).
The batch runs on the loop, right after the iteration that queued it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from engine.metrics import Metrics
from engine.model import Model

AnswerMany = Callable[[Model, Sequence[Any]], list[bytes]]


class QueryBatcher:
    """Collects the ``(answer_many, model, job)`` calls of a loop iteration; one call answers each group."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._groups: dict[tuple[int, AnswerMany], tuple[Model, list[tuple[Any, asyncio.Future[bytes]]]]] = {}
        self._scheduled = False
        self.batches = 0
        self.queries = 0

    def run(self, answer_many: AnswerMany, model: Model, job: Any) -> asyncio.Future[bytes]:
        """A future for ``answer_many(model, [..., job, ...])``'s answer to ``job``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        key = (id(model), answer_many)  # the caller pins the model until its future is done
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = (model, [])
        group[1].append((job, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        groups, self._groups = self._groups, {}
        self._scheduled = False
        for (_, answer_many), (model, items) in groups.items():
            live = [(job, f) for job, f in items if not f.done()]  # a cancelled request is not answered
            if not live:
                continue
            self.batches += 1
            self.queries += len(live)
            if self.metrics is not None:
                self.metrics.query_batch.observe(len(live))
            try:
                bodies = answer_many(model, [job for job, _ in live])
            except Exception:  # one bad query must not fail the others: answer each alone
                for job, f in live:
                    try:
                        f.set_result(answer_many(model, [job])[0])
                    except Exception as exc:  # surfaces in that request's handler (logged as a 500)
                        f.set_exception(exc)
                continue
            for (_, f), body in zip(live, bodies, strict=True):
                f.set_result(body)
