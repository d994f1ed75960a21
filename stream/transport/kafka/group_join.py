"""Workarounds for kafka-python 3.0's consumer-group I/O thread.

* :class:`_Listener` bridges kafka-python's (IO-thread) rebalance hooks to user callbacks run on a
  helper thread, so callbacks may call commit/seek/offsets without deadlocking the IO loop.
* :func:`settle_group` finishes a pending group (re)join before fetching and repairs a join whose
  completion kafka-python lost (the "engine consumed nothing" race).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.future import Future as _KFuture

from fusewatch.stream.transport.base import RebalanceCallback

log = logging.getLogger("fusewatch.stream.transport.kafka")


class _Listener(AsyncConsumerRebalanceListener):
    """Bridges kafka-python's (IO-thread) rebalance hooks to the user's callbacks.

    The user callback runs on a helper thread while the IO loop awaits it, so blocking consumer
    calls (commit, seek, offsets) made from the callback are served by the loop instead of
    deadlocking it.
    """

    def __init__(
        self,
        consumer: KafkaConsumer,
        on_assign: RebalanceCallback | None,
        on_revoke: RebalanceCallback | None,
        inline: bool = False,
    ):
        self._consumer = consumer
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._inline = inline

    async def on_partitions_revoked(self, revoked):
        if revoked:
            await self._run(self._on_revoke, revoked)

    async def on_partitions_assigned(self, assigned):
        await self._run(self._on_assign, assigned)

    async def _run(self, cb: RebalanceCallback | None, tps) -> None:
        if cb is None:
            return
        arg = {(tp.topic, tp.partition) for tp in tps}
        net = getattr(self._consumer, "_net", None)
        if self._inline or net is None or not hasattr(net, "call_soon_threadsafe"):
            cb(arg)
            return
        fut = _KFuture()

        def work() -> None:
            err: BaseException | None = None
            try:
                cb(arg)
            except BaseException as e:  # noqa: BLE001 - handed back to the IO loop
                err = e

            async def done() -> None:
                if err is None:
                    fut.success(None)
                else:
                    fut.failure(err if isinstance(err, Exception) else RuntimeError(repr(err)))

            net.call_soon_threadsafe(done)

        threading.Thread(target=work, name="fusewatch-rebalance", daemon=True).start()
        await fut


def settle_group(c: KafkaConsumer, group_id: str | None, join_ms: int | None, call: Callable[..., Any]) -> bool:
    """Finish a pending group (re)join before fetching, and repair a lost one.

    kafka-python 3.0.12 completes a join in two halves: the JoinGroup/SyncGroup round trip runs
    as a task on its I/O thread, and the awaiting ``poll`` then applies the result (assignment,
    state STABLE, heartbeats back on). If ``poll``'s timeout expires while the task is in flight
    and the rejoin was triggered by a metadata change (partitions added, the first metadata of
    a new topic), the leader's assignment makes ``need_rejoin()`` false before the task ends, so
    no later ``poll`` awaits it: the member stays REBALANCING with heartbeats off, fetches
    nothing and is evicted after ``session_timeout_ms`` — the "engine consumed nothing" flake.
    Here a pending join is awaited with a bound of ``session_timeout_ms`` (not the caller's few
    milliseconds), and a join whose completion was lost anyway is detected (``rejoining`` with
    no task in flight and no rejoin needed) and redone with :meth:`request_rejoin`.

    ``join_ms``: bound on awaiting the join (None: the consumer's ``session_timeout_ms``);
    ``call(what, fn, **kw)`` runs kafka-python calls with error wrapping. Returns True when a lost
    join was detected and redone.
    """
    coord = getattr(c, "_coordinator", None)
    if coord is None or group_id is None or not c.subscription():
        return False
    lost = False
    if getattr(coord, "rejoining", False) and not coord.need_rejoin():
        task = getattr(coord, "_join_task", None)
        if task is None or task.is_done:
            lost = True
            log.warning(
                "group %s: a rebalance finished without being applied (kafka-python join race); rejoining", group_id
            )
            coord.request_rejoin()
    if coord.need_rejoin():
        bound = join_ms if join_ms is not None else c.config["session_timeout_ms"]
        call(f"join group {group_id!r}", coord.ensure_active_group, timeout_ms=int(bound))
    return lost
