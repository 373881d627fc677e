"""The daily sweeper of the retraining runs' leftover RDS snapshots.

Each retraining run snapshots the database as ``train-<uuid>`` and deletes that manual snapshot itself
on every path it controls. A run that is aborted, or that hits the state machine's timeout, runs no
cleanup state, and RDS keeps a manual snapshot (a full copy of the applicants' data, billed per GB)
until someone deletes it. Once a day this function deletes such snapshots of the stack's database,
only when they are older than any execution can run, so a running execution's snapshot is never touched.

Standard library only (boto3 comes with Lambda's runtime, and only :mod:`.handler` imports it).
"""
