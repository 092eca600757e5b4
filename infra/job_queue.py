"""The job queue of ``dispatch=sqs``: an SQS FIFO queue the Lambda sends each job to, and its dead-letter queue.

Owns the queue's delivery contract with the runtime (lambda_fn/queue.py sends, the PR processor long-polls):
FIFO without content-based deduplication (the Lambda sends MessageDeduplicationId = MessageGroupId = job id, so a
retried send is dropped and jobs do not wait on each other), a visibility timeout the PR processor keeps extending
while the job runs (so a dead host's message returns after it), and a redrive to the dead-letter queue after
``MAX_RECEIVES`` receives (a poison message stops coming back). Encrypted with SQS-managed keys and TLS-only.
It grants nothing: the Stack grants the Lambda its send and the hosts their receive/delete.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from aipm_common.envnames import HostInstall

MAX_RECEIVES = 5
RECEIVE_WAIT_S = 20  # SQS's longest long poll: a free worker hears of a job at once, with few empty receives
VISIBILITY_S = 300  # the PR processor's PR_SQS_VISIBILITY_S: it extends the message every third of this
RETENTION = Duration.days(4)  # SQS's default: a job nobody could take for days is stale anyway
DEAD_LETTER_RETENTION = Duration.days(14)  # the longest SQS keeps a message: time to look at what failed

# The Lambda sends; the PR processors receive, keep (visibility) and delete. Nothing else, on this queue only.
SEND_ACTIONS = ("sqs:SendMessage", "sqs:GetQueueAttributes")
CONSUME_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueAttributes")


class JobQueue(Construct):
    """``queue`` and ``dead_letter_queue`` (both FIFO)."""

    def __init__(self, scope: Construct, id_: str) -> None:
        super().__init__(scope, id_)
        common = {"fifo": True, "encryption": sqs.QueueEncryption.SQS_MANAGED, "enforce_ssl": True,
                  "removal_policy": RemovalPolicy.DESTROY}
        self.dead_letter_queue = sqs.Queue(self, "DeadLetters", retention_period=DEAD_LETTER_RETENTION, **common)
        self.queue = sqs.Queue(
            self, "Jobs",
            content_based_deduplication=False,
            visibility_timeout=Duration.seconds(VISIBILITY_S),
            receive_message_wait_time=Duration.seconds(RECEIVE_WAIT_S),
            retention_period=RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=MAX_RECEIVES, queue=self.dead_letter_queue),
            **common,
        )

    def host_environment(self) -> dict[str, str]:
        """What the hosts' install writes into the PR processor's environment file (install.sh)."""
        return {
            HostInstall.AIPM_DISPATCH: "sqs",
            HostInstall.AIPM_JOB_QUEUE_URL: self.queue.queue_url,
            HostInstall.AIPM_SQS_WAIT_S: str(RECEIVE_WAIT_S),
            HostInstall.AIPM_SQS_VISIBILITY_S: str(VISIBILITY_S),
        }
