"""The PR processor (docs/contracts.md, "PR Processor API"): durable jobs that turn a task file into a pushed commit.

Modules: ``models`` (the edge: request validation), ``jobs`` (SQLite store and the job state machine),
``git_ops`` (every git call), ``pool_client`` (the signed worker-pool client), ``runner`` (one job's attempts),
``scheduler`` (how many run at once, cancel, recovery after a restart), ``callbacks`` (the signed outbox),
``events`` (live job lines for Server-Sent Events), ``metrics`` (CloudWatch EMF), ``app`` (routes).
"""
