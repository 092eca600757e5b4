"""``AIPM_DISPATCH=sqs``: this host's PR processor takes jobs from the FIFO job queue that every host long-polls.

Owns the messages it holds. It asks for no more messages than the worker pool can start (its capacity minus the jobs
this processor already has queued or running, and minus the messages of ended jobs not yet deleted), admits each
through the same model and ``ProcessorService.submit`` that ``POST /api/process-pr`` uses, keeps the message invisible
while its job lives (extending the visibility every third of ``PR_SQS_VISIBILITY_S``) and deletes it once the job is
final. A message that is not a valid job is never deleted: it is logged (its id and why, never its body) and made
visible again, so the queue's redrive policy moves it to the dead-letter queue after ``maxReceiveCount`` receives. If
this host dies, its messages reappear after the visibility timeout and another host takes them (the runner then finds
a job already committed on its branch).

In an Auto Scaling group (``AIPM_ASG_NAME``) the intake tells ``scale_in.ScaleInProtection`` whether this host has a
live job or a message not yet deleted whenever that may have changed (a job taken, a message deleted, each keep
round), so a host is not scaled in mid-job; without a group name there is no protection, which is said once at start.

The message id and receipt handle are stored with the job (``Receipts.hold``) from its admission until the
message is deleted, so a processor restarted on the same state (a crash, SIGKILL, a deploy) within the visibility
timeout adopts again the messages of the jobs it takes up again: it extends them at once and deletes them when the
jobs end, and deletes at start those whose job ended before the delete went out. A receipt handle that is no longer
valid (the message was received again elsewhere, or went back to the queue) is logged and dropped. Receipt handles are
logged only by their first characters.

boto3 blocks, so every call runs in a daemon thread: the API stays responsive, and a long poll in flight at shutdown
does not hold the process (what it receives then is released if the process still lives, else reappears after the
visibility timeout). It must not run jobs, git or the agent: it only hands jobs to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aipm_common.aws import describe, error_code, in_thread, sqs_client
from ec2_services.pr_processor.models import InvalidInput, ProcessPrRequest
from ec2_services.pr_processor.service import JobConflict, ProcessorService
from ec2_services.pr_processor.state_machine import LIVE_STATES

if TYPE_CHECKING:
    from ec2_services.pr_processor.scale_in import ScaleInProtection

log = logging.getLogger(__name__)

MAX_MESSAGES = 10  # SQS's limit per receive
ROOM_RECHECK_S = 1.0  # with no free worker: how often capacity is looked at again (a job's end wakes it sooner)
CONFLICT_DELAY_S = 30  # a job refused because another job is live on its branch comes back after this long
BUSY_DELAY_S = 5  # the job store refused the write (locked, disk full): the message comes back after this long
MAX_BACKOFF_S = 30.0
# SQS's answers to a receipt handle that no longer holds its message (the last part of the code: the JSON protocol
# prefixes "AWS.SimpleQueueService.").
STALE_HANDLE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidReceiptHandle"})


def stale_handle(exc: BaseException) -> bool:
    """The receipt handle no longer holds the message: another receive replaced it, or the message went back to the
    queue or was deleted. Trying again cannot help."""
    code = error_code(exc)
    if code is None:
        return False
    if code.rsplit(".", 1)[-1] in STALE_HANDLE_CODES:
        return True
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return code.endswith("InvalidParameterValue") and "receipthandle" in message.replace(" ", "").lower()


def handle_hint(receipt_handle: str) -> str:
    """Enough of a receipt handle to tell two apart in a log, not the handle."""
    return f"{receipt_handle[:8]}… ({len(receipt_handle)} chars)"


def _schema_problem(exc: ValidationError) -> str:
    # Never the input itself: only where and what, as the HTTP edge's 422 says it.
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


@dataclass
class Receipt:
    """What extends or deletes a message this host took: its id and its receipt handle (the job store keeps the
    same pair with the job's id and state, ``jobs.HeldMessage``, so a restart adopts it again)."""

    message_id: str
    receipt_handle: str


class SqsIntake:
    def __init__(self, service: ProcessorService, *, queue_url: str, wait_s: int, visibility_s: int,
                 client: Any = None, protection: ScaleInProtection | None = None):
        self.service = service
        self.protection = protection
        self.queue_url = queue_url
        self.wait_s = wait_s
        self.visibility_s = visibility_s
        self._client = client
        self.held: dict[str, Receipt] = {}  # job_id → the message that carried it, until the job is final
        self.received = 0
        self.poison = 0
        self.adopted = 0  # messages taken back from the job store at start
        self.stale = 0  # receipt handles found no longer valid
        self.last_error: str | None = None
        self._room = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._deletes: set[asyncio.Task[None]] = set()
        self._deleting = 0  # DeleteMessage calls in flight (their message is out of ``held`` meanwhile)

    # --- life -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is None:
            self._client = await in_thread(sqs_client, self.queue_url, read_timeout=self.wait_s + 10)
        self.service.events.on_end(self._job_ended)
        self.adopt_held()
        if self.protection is None:
            log.info("AIPM_ASG_NAME is empty: this host does not protect itself from scale-in while it has jobs")
        self._tasks = [asyncio.create_task(self._receive_loop(), name="sqs-receive"),
                       asyncio.create_task(self._keep_loop(), name="sqs-keep")]
        log.info("taking jobs from the job queue %s (wait %d s, visibility %d s)", self.queue_url, self.wait_s,
                 self.visibility_s)

    async def stop(self) -> None:
        """Stop receiving at once; messages held for jobs still live stay invisible until their timeout runs out
        (this host takes those jobs up again if it restarts in time; otherwise another host does)."""
        self._stopping = True
        tasks = [*self._tasks, *self._deletes]
        for task in self._tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=3)
        if self.protection is not None:
            await self.protection.settle()

    def adopt_held(self) -> None:
        """Take back the messages this host held before it restarted (from the job store). The first round of
        ``_keep_loop`` extends those of live jobs and deletes those of ended ones."""
        for record in self.service.store.receipts.held():
            if record.job_id in self.held:
                continue
            self.held[record.job_id] = Receipt(record.message_id, record.receipt_handle)
            self.adopted += 1
            log.info("job queue message %s of job %s (%s) held before the restart: %s", record.message_id,
                     record.job_id, record.status.value,
                     "deleting it" if record.status.final else "keeping it invisible while the job runs",
                     extra={"job_id": record.job_id})

    def health(self) -> dict[str, Any]:
        return {"queue": self.queue_url.rsplit("/", 1)[-1], "held": len(self.held), "received": self.received,
                "adopted": self.adopted, "stale": self.stale, "poison": self.poison, "last_error": self.last_error,
                "scale_in_protection": self.protection.health() if self.protection is not None else None}

    # --- taking messages --------------------------------------------------------------------------------------

    async def free_workers(self) -> int:
        """Workers this host can still start a job on: the pool's size minus the jobs it already holds."""
        scheduler = self.service.scheduler
        if not scheduler.pool_reachable:
            await scheduler.refresh_capacity()
            if not scheduler.pool_reachable:
                return 0  # a host whose pool is down takes nothing: another host can run the job now
        return scheduler.capacity - self.live_jobs() - self.ended_not_deleted()

    def ended_not_deleted(self) -> int:
        """Messages of ended jobs this host still holds (their delete not yet done): each still counts against the
        pool's size, so the host never holds more messages than it has workers, and the next message is left for
        another host until then (the delete's end wakes the receive loop)."""
        ended = 0
        for job_id in list(self.held):
            job = self.service.get(job_id)
            ended += job is None or job.status.final
        return ended + self._deleting

    def live_jobs(self) -> int:
        """Jobs queued, running or pushing on this host (taken from the queue or not)."""
        counts = self.service.store.jobs.counts()
        return sum(counts.get(state.value, 0) for state in LIVE_STATES)

    def _busy_changed(self) -> None:
        """Scale-in protection follows this host's duties (a call goes out only when that changes it): a live job, or
        a message not deleted yet — a host let go before that would have an ended job run again elsewhere."""
        if self.protection is None:
            return
        try:
            busy = bool(self.held) or self._deleting > 0 or self.live_jobs() > 0
        except sqlite3.Error as exc:  # the next job start or end, or keep round, looks again
            log.warning("could not count this host's live jobs for its scale-in protection (%s)", exc)
            return
        self.protection.want(busy)

    async def _receive_loop(self) -> None:
        backoff = 1.0
        while True:
            free = await self.free_workers()
            if free <= 0:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), ROOM_RECHECK_S)
                continue
            try:
                messages = await in_thread(self._receive, min(free, MAX_MESSAGES))
            except Exception as exc:
                self.last_error = describe(exc)
                log.warning("could not receive from the job queue (%s); trying again in %.0f s", self.last_error,
                            backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff, self.last_error = 1.0, None
            for message in messages:
                await self._admit(message)

    def _receive(self, count: int) -> list[dict[str, Any]]:
        """One long poll (in its thread). What it gets after shutdown began goes straight back to the queue."""
        answer = self._client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=count, WaitTimeSeconds=self.wait_s,
            VisibilityTimeout=self.visibility_s, MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = answer.get("Messages", [])
        if self._stopping:
            for message in messages:
                with contextlib.suppress(Exception):
                    self._set_visibility(message["ReceiptHandle"], 0)
            return []
        return messages

    async def _admit(self, message: dict[str, Any]) -> None:
        self.received += 1
        held = Receipt(message["MessageId"], message["ReceiptHandle"])
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        try:
            request = ProcessPrRequest.model_validate_json(message.get("Body", ""))
            job, created = self.service.submit(request, message=(held.message_id, held.receipt_handle))
        except ValidationError as exc:
            await self._refuse(held, receives, f"the body is not a process-pr request: {_schema_problem(exc)}")
            return
        except InvalidInput as exc:
            await self._refuse(held, receives, str(exc))
            return
        except JobConflict as exc:
            log.warning("job queue message %s: %s; it returns to the queue in %d s", held.message_id, exc,
                        CONFLICT_DELAY_S, extra={"job_id": request.job_id})
            await self._release(held, CONFLICT_DELAY_S)
            return
        except sqlite3.OperationalError as exc:
            log.error("job queue message %s not admitted, the job store is unavailable (%s); it returns in %d s",
                      held.message_id, exc, BUSY_DELAY_S)
            await self._release(held, BUSY_DELAY_S)
            return
        await self._hold(job.job_id, job.status.final, created, held)

    async def _hold(self, job_id: str, final: bool, created: bool, held: Receipt) -> None:
        known = self.held.get(job_id)
        if final:
            log.info("job queue message %s: job %s has already ended here; deleting the message", held.message_id,
                     job_id, extra={"job_id": job_id})
            await self._delete_message(job_id, held)
        elif known is not None and known.message_id != held.message_id:
            log.info("job queue message %s is a second copy of job %s, which runs here; deleting the copy",
                     held.message_id, job_id, extra={"job_id": job_id})
            await self._delete_message(job_id, held)
        else:
            self.held[job_id] = held  # a new job, or the same message again (its newest receipt handle counts)
            if not created:  # a new job's message was stored with it
                self._record(job_id, held)
            self.service.events.event(
                job_id, f"taken from the job queue (message {held.message_id})" if created
                else f"job queue message {held.message_id} received again; the job is still live here")
            self._busy_changed()

    async def _refuse(self, held: Receipt, receives: str, why: str) -> None:
        """A poison message: logged, then visible again at once so the redrive policy moves it to the DLQ."""
        self.poison += 1
        log.error("job queue message %s (received %s times) is not a valid job and is left for the dead-letter "
                  "queue: %s", held.message_id, receives, why)
        await self._release(held, 0)

    async def _release(self, held: Receipt, delay: int) -> None:
        try:
            await in_thread(self._set_visibility, held.receipt_handle, delay)
        except Exception as exc:
            log.warning("could not return job queue message %s to the queue (%s); it returns after its visibility "
                        "timeout", held.message_id, describe(exc))

    def _set_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._client.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt_handle,
                                               VisibilityTimeout=seconds)

    # --- holding and letting go -------------------------------------------------------------------------------

    def _record(self, job_id: str, held: Receipt) -> None:
        try:
            self.service.store.receipts.hold(job_id, held.message_id, held.receipt_handle)
        except sqlite3.Error as exc:  # held in memory still; only a restart would lose it
            log.warning("could not record job queue message %s of job %s in the job store (%s)", held.message_id,
                        job_id, exc, extra={"job_id": job_id})

    def _forget(self, job_id: str, held: Receipt) -> None:
        """Neither in memory nor in the job store any more (a newer message held for the job is kept)."""
        if self.held.get(job_id) is held:
            del self.held[job_id]
        try:
            self.service.store.receipts.release(job_id, held.message_id)
        except sqlite3.Error as exc:  # the next start finds the handle no longer valid, or deletes the message
            log.warning("could not clear job queue message %s of job %s in the job store (%s)", held.message_id,
                        job_id, exc, extra={"job_id": job_id})

    async def _keep_loop(self) -> None:
        while True:  # the first round at once: messages adopted at start may have little of their timeout left
            await self._keep_round()
            self._busy_changed()  # at start, then a retry of a failed change and any job submitted over HTTP
            await asyncio.sleep(self.visibility_s / 3)

    async def _keep_round(self) -> None:
        for job_id, held in list(self.held.items()):
            job = self.service.get(job_id)
            if job is None or job.status.final:
                await self._delete_message(job_id, held)
                continue
            try:
                await in_thread(self._set_visibility, held.receipt_handle, self.visibility_s)
            except Exception as exc:
                if stale_handle(exc):
                    self.stale += 1
                    log.warning("job queue message %s of job %s can no longer be held (%s; receipt handle %s): it was "
                                "received again elsewhere or went back to the queue, and another host may run the "
                                "job too; dropping the handle", held.message_id, job_id, describe(exc),
                                handle_hint(held.receipt_handle), extra={"job_id": job_id})
                    self._forget(job_id, held)
                    continue
                # Another host may take the job when it reappears; the runner's check for the job's commit on
                # the branch keeps that from committing twice.
                log.warning("could not extend job queue message %s of job %s (%s)", held.message_id, job_id,
                            describe(exc), extra={"job_id": job_id})

    def _job_ended(self, job_id: str) -> None:
        self._room.set()
        held = self.held.get(job_id)
        if held is not None and not self._stopping:
            task = asyncio.get_running_loop().create_task(self._delete_message(job_id, held))
            self._deletes.add(task)
            task.add_done_callback(self._deletes.discard)
        else:
            self._busy_changed()

    async def _delete_message(self, job_id: str, held: Receipt) -> None:
        self._deleting += 1
        try:
            await self._delete(job_id, held)
        finally:
            self._deleting -= 1
            self._room.set()  # the worker it counted against is free for the next message
            self._busy_changed()  # the host is let go for scale-in only once its job's message is deleted

    async def _delete(self, job_id: str, held: Receipt) -> None:
        mine = self.held.get(job_id) is held
        if mine:
            del self.held[job_id]
        try:
            await in_thread(self._client.delete_message, QueueUrl=self.queue_url, ReceiptHandle=held.receipt_handle)
        except Exception as exc:
            if stale_handle(exc):
                self.stale += 1
                log.warning("job queue message %s of ended job %s was not deleted: its receipt handle %s is no longer "
                            "valid (%s); when it reappears it is deleted then", held.message_id, job_id,
                            handle_hint(held.receipt_handle), describe(exc), extra={"job_id": job_id})
                self._forget(job_id, held)
                return
            log.warning("could not delete job queue message %s of ended job %s (%s); trying again in %.0f s, and "
                        "when it reappears it is deleted then", held.message_id, job_id, describe(exc),
                        self.visibility_s / 3, extra={"job_id": job_id})
            if mine and job_id not in self.held:
                self.held[job_id] = held  # the next keep round deletes it (the job store still has it)
            return
        self._forget(job_id, held)
        log.info("job queue message %s of job %s deleted", held.message_id, job_id, extra={"job_id": job_id})
