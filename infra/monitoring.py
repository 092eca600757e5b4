"""The CloudWatch dashboard and alarms: jobs, durations, queue depth and worker restarts from the services' Embedded
Metric Format log lines (namespace ``AIPM``, dimension ``Service``), the Lambda's errors and duration, and the
instance's status checks; with ``dispatch=sqs`` also the SQS job queue (depth, age of the oldest job, dead letters)
and the hosts of the Auto Scaling group.

Owns what an operator watches and what wakes them (an SNS topic, with an e-mail subscription when one is given).
It reads metrics only; it creates no log group and grants nothing.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from infra.job_queue import MAX_RECEIVES, JobQueue

NAMESPACE = "AIPM"
PR_PROCESSOR = "pr-processor"
WORKER_POOL = "worker-pool"
FIVE_MINUTES = Duration.minutes(5)
# dispatch=sqs: a job waiting this long means every host is busy at maxHosts, or the hosts do not take jobs.
OLDEST_JOB_ALARM_S = 1800


def aipm_metric(name: str, service: str, statistic: str = "Sum", label: str | None = None) -> cw.Metric:
    return cw.Metric(
        namespace=NAMESPACE, metric_name=name, dimensions_map={"Service": service},
        statistic=statistic, period=FIVE_MINUTES, label=label or name,
    )


class Monitoring(Construct):
    """``dashboard``, ``alarms`` (name → Alarm) and ``topic`` (where the alarms go)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        function: lambda_.IFunction,
        instance: ec2.Instance | None,
        dashboard_name: str,
        alarm_email: str | None,
        group: autoscaling.AutoScalingGroup | None = None,
        job_queue: JobQueue | None = None,
    ) -> None:
        super().__init__(scope, id_)
        self.topic = sns.Topic(self, "Alarms", display_name="aipm-kiro alarms", enforce_ssl=True)
        if alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(alarm_email))

        started = aipm_metric("JobsStarted", PR_PROCESSOR, label="started")
        succeeded = aipm_metric("JobsSucceeded", PR_PROCESSOR, label="succeeded")
        failed = aipm_metric("JobsFailed", PR_PROCESSOR, label="failed")
        duration_avg = aipm_metric("JobDuration", PR_PROCESSOR, "Average", "average")
        duration_p90 = aipm_metric("JobDuration", PR_PROCESSOR, "p90", "p90")
        queue_pool = aipm_metric("QueueDepth", WORKER_POOL, "Maximum", "worker pool queue")
        queue_jobs = aipm_metric("QueueDepth", PR_PROCESSOR, "Maximum", "jobs queued")
        restarts = aipm_metric("WorkerRestarts", WORKER_POOL, label="worker restarts")
        tasks_done = aipm_metric("TasksCompleted", WORKER_POOL, label="agent tasks completed")
        tasks_failed = aipm_metric("TasksFailed", WORKER_POOL, label="agent tasks failed")
        lambda_errors = function.metric_errors(period=FIVE_MINUTES, statistic="Sum")
        lambda_invocations = function.metric_invocations(period=FIVE_MINUTES, statistic="Sum")
        lambda_duration = function.metric_duration(period=FIVE_MINUTES, statistic="p90")
        # The one instance, or the worst host of the group (EC2 aggregates detailed monitoring by group name).
        host = {"InstanceId": instance.instance_id} if instance is not None \
            else {"AutoScalingGroupName": group.auto_scaling_group_name}
        status_failed = cw.Metric(
            namespace="AWS/EC2", metric_name="StatusCheckFailed",
            dimensions_map=host, statistic="Maximum", period=Duration.minutes(1),
        )

        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=dashboard_name,
                                      default_interval=Duration.hours(24))
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Jobs started / succeeded / failed", left=[started, succeeded, failed], width=12),
            cw.GraphWidget(title="Job duration (s)", left=[duration_avg, duration_p90], width=12),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Queue depth", left=[queue_pool, queue_jobs], width=8),
            cw.GraphWidget(title="Worker restarts / agent tasks", left=[restarts, tasks_done, tasks_failed], width=8),
            cw.GraphWidget(title="Host status check failed", left=[status_failed], width=8),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Lambda invocations / errors", left=[lambda_invocations, lambda_errors], width=12),
            cw.GraphWidget(title="Lambda duration p90 (ms)", left=[lambda_duration], width=12),
        )
        queue_alarms = self._queue_and_hosts(job_queue, group) if job_queue is not None and group is not None else {}

        self.alarms: dict[str, cw.Alarm] = {
            "JobsFailed": failed.create_alarm(
                self, "JobsFailedAlarm", alarm_description="A job ended failed (after its retries): see its log_tail",
                threshold=1, evaluation_periods=1, comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "WorkerRestarts": restarts.with_(period=Duration.minutes(15)).create_alarm(
                self, "WorkerRestartsAlarm",
                alarm_description="Agent sessions keep restarting (timeouts, exits): is kiro-cli signed in?",
                threshold=3, evaluation_periods=1, comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "LambdaErrors": lambda_errors.create_alarm(
                self, "LambdaErrorsAlarm", alarm_description="The API Lambda raised errors (not 4xx answers)",
                threshold=1, evaluation_periods=1, comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "InstanceStatus": status_failed.create_alarm(
                self, "InstanceStatusAlarm", alarm_description="The host fails its EC2 status checks",
                threshold=1, evaluation_periods=3, comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                # A stopped instance reports nothing: that is "insufficient data", not an outage to page about.
                treat_missing_data=cw.TreatMissingData.MISSING,
            ),
        }
        self.alarms |= queue_alarms
        action = cw_actions.SnsAction(self.topic)
        for alarm in self.alarms.values():
            alarm.add_alarm_action(action)

    def _queue_and_hosts(self, job_queue: JobQueue, group: autoscaling.AutoScalingGroup) -> dict[str, cw.Alarm]:
        """dispatch=sqs: the job queue's depth and age, its dead letters, and the group's hosts; their alarms."""
        queue, dead = job_queue.queue, job_queue.dead_letter_queue
        minute = Duration.minutes(1)
        waiting = queue.metric_approximate_number_of_messages_visible(period=minute, label="waiting")
        running = queue.metric_approximate_number_of_messages_not_visible(period=minute, label="running (in flight)")
        oldest = queue.metric_approximate_age_of_oldest_message(period=minute, label="oldest waiting job")
        dead_letters = dead.metric_approximate_number_of_messages_visible(period=minute, label="dead letters")

        def group_metric(name: str, label: str) -> cw.Metric:
            return cw.Metric(namespace="AWS/AutoScaling", metric_name=name, statistic="Average", period=minute,
                             dimensions_map={"AutoScalingGroupName": group.auto_scaling_group_name}, label=label)

        in_service = group_metric("GroupInServiceInstances", "in service")
        desired = group_metric("GroupDesiredCapacity", "desired")
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Job queue (SQS): waiting / running / dead letters",
                           left=[waiting, running, dead_letters], width=8),
            cw.GraphWidget(title="Oldest waiting job (s)", left=[oldest], width=8),
            cw.GraphWidget(title="Hosts in service / desired", left=[in_service, desired], width=8),
        )
        missing = cw.MathExpression(
            expression="desired - inService", label="hosts desired but not in service", period=FIVE_MINUTES,
            using_metrics={"desired": desired.with_(period=FIVE_MINUTES),
                           "inService": in_service.with_(period=FIVE_MINUTES)},
        )
        greater_or_equal = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        return {
            "DeadLetters": dead_letters.with_(period=FIVE_MINUTES).create_alarm(
                self, "DeadLettersAlarm",
                alarm_description=f"A job was received {MAX_RECEIVES} times without finishing and is in the "
                                  "dead-letter queue (see DeadLetterQueueUrl; the hosts' pr-processor logs say why)",
                threshold=1, evaluation_periods=1, comparison_operator=greater_or_equal,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "OldestJob": oldest.with_(period=FIVE_MINUTES).create_alarm(
                self, "OldestJobAlarm",
                alarm_description=f"A job has waited over {OLDEST_JOB_ALARM_S // 60} min in the queue: every host "
                                  "busy at maxHosts, or the hosts do not take jobs",
                threshold=OLDEST_JOB_ALARM_S, evaluation_periods=1, comparison_operator=greater_or_equal,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            # Launches that fail after the deploy (scale-out: capacity, quota, a bad template), which no deploy sees.
            # A host that launches but whose install fails stays in service without polling: OldestJob catches that.
            "HostsMissing": missing.create_alarm(
                self, "HostsMissingAlarm",
                alarm_description="The group has fewer hosts in service than desired for 30 min: launches are "
                                  "failing (see the group's activity history)",
                threshold=1, evaluation_periods=6, comparison_operator=greater_or_equal,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        }
