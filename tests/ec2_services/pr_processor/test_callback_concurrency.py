"""Callbacks go out at once: a target that hangs holds only its own delivery, and the next round does not send a
callback that is still on its way a second time."""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi import FastAPI

from ec2_services.pr_processor.callbacks import CallbackSender
from ec2_services.pr_processor.store.outbox import CallbackState, OutboxItem
from tests.conftest import SECRET
from tests.support.servers import serve_in_thread


class Outbox:
    """The store's outbox, in memory: what is due, and what each delivery recorded."""

    def __init__(self, items: list[OutboxItem]):
        self.items = {i.job_id: i for i in items}
        self.recorded: dict[str, CallbackState] = {}

    def due(self, now: float) -> list[OutboxItem]:
        return [i for j, i in self.items.items() if j not in self.recorded]

    def record(self, job_id: str, *, state: CallbackState, **_):
        self.recorded[job_id] = state


def item(job_id: str, url: str) -> OutboxItem:
    return OutboxItem(job_id=job_id, url=url, payload="{}", state=CallbackState.PENDING, attempts=0,
                      next_at=0.0, created_at=time.time(), last_error=None)


def test_a_hanging_callback_target_does_not_hold_back_the_others():
    release = threading.Event()
    hits: list[str] = []
    target = FastAPI()

    @target.post("/hang")
    def hang():
        hits.append("hang")
        release.wait(30)
        return {}

    @target.post("/ok/{n}")
    def ok(n: int):
        hits.append(f"ok{n}")
        return {}

    with serve_in_thread(target) as url:
        outbox = Outbox([item("j-hang", url + "/hang"), *(item(f"j-ok{n}", f"{url}/ok/{n}") for n in range(3))])

        async def scenario():
            sender = CallbackSender(outbox, SECRET, base_delay=1, max_age=3600)
            try:
                sender.start_due()
                deadline = time.monotonic() + 20  # a bound for a stuck test, not a measurement
                while len(outbox.recorded) < 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert outbox.recorded == {f"j-ok{n}": CallbackState.DELIVERED for n in range(3)}
                assert sender.start_due() == []  # the hanging one is still on its way: not sent twice
                release.set()
                while "j-hang" not in outbox.recorded and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert outbox.recorded["j-hang"] == CallbackState.DELIVERED
            finally:
                release.set()
                await sender.aclose()

        asyncio.run(scenario())
    assert hits.count("hang") == 1 and sorted(h for h in hits if h != "hang") == ["ok0", "ok1", "ok2"]
