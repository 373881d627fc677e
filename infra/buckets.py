"""The one way this app makes S3 buckets: private, KMS-encrypted, TLS-only, versioned, access-logged,
abandoned multipart uploads aborted, uploads with customer-provided keys (SSE-C) refused."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.nag import suppress

# SSE-C uploads are refused (403) on every bucket. An SSE-C object is encrypted with a key S3 does not
# keep: no function of the stack can read it (a file dropped that way fails three times and ends in the
# dead-letter queue), and credentials that can overwrite objects can re-encrypt them under a key only
# their holder has (ransomware by re-encryption). S3 blocks SSE-C by default only on buckets created
# since April 2026 in accounts without SSE-C objects; stated here, it holds for older stacks and shows
# up as drift if someone lifts it.
BLOCKED_ENCRYPTION = [s3.BlockedEncryptionType.SSE_C]


def access_log_bucket(scope: Construct, construct_id: str, removal_policy: RemovalPolicy) -> s3.Bucket:
    """Target of the other buckets' server access logs (S3 log delivery requires SSE-S3, not KMS)."""
    bucket = s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        blocked_encryption_types=BLOCKED_ENCRYPTION,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # log delivery via bucket policy, no ACLs
        # Versioned (NIST 800-53 AU-9): a log object deleted or overwritten by hand stays recoverable
        # for 30 days. S3 itself never rewrites a log object, so this costs only what is deleted.
        versioned=True,
        lifecycle_rules=[
            s3.LifecycleRule(
                id="expire-access-logs",
                expiration=Duration.days(90),
                noncurrent_version_expiration=Duration.days(30),
            ),
            # Expiration leaves a delete marker in a versioned bucket; drop it once nothing is under it.
            s3.LifecycleRule(id="remove-expired-delete-markers", expired_object_delete_marker=True),
        ],
        removal_policy=removal_policy,
        auto_delete_objects=False,
    )
    # No AwsSolutions-S1 to acknowledge: cdk-nag does not report it for a bucket others log into.
    suppress(
        bucket,
        "NIST.800.53.R5-S3DefaultEncryptionKMS",
        "SC-28/AU-9(3) ask for encryption at rest, which SSE-S3 (AES-256) provides. KMS is not possible "
        "here: S3 server access logging delivers only to target buckets whose default encryption is "
        "SSE-S3 (S3 User Guide, server access logging); the logs hold request metadata, no objects.",
    )
    _acknowledge_no_replication(bucket)
    return bucket


def _acknowledge_no_replication(bucket: s3.Bucket) -> None:
    suppress(
        bucket,
        "NIST.800.53.R5-S3BucketReplicationEnabled",
        "CP-6/CP-9 ask for an alternate storage site. The stack is single-region by design (data "
        "residency); objects are versioned (or, for access logs, short-lived) and the audit bucket is "
        "Object Lock protected, which covers deletion, not the loss of the region. Deployers whose "
        "continuity policy requires it add S3 Replication to a bucket in a second region, with a replica "
        "KMS key there (first the audit bucket, whose records cannot be rebuilt).",
    )


def rotating_key(
    scope: Construct, construct_id: str, *, description: str, removal_policy: RemovalPolicy
) -> kms.Key:
    """A customer-managed KMS key with yearly rotation, the one kind this app encrypts data with."""
    return kms.Key(
        scope,
        construct_id,
        description=description,
        enable_key_rotation=True,
        removal_policy=removal_policy,
    )


def secure_bucket(
    scope: Construct,
    construct_id: str,
    *,
    key: kms.IKey,
    access_logs: s3.IBucket,
    removal_policy: RemovalPolicy,
    lifecycle_rules: Sequence[s3.LifecycleRule] = (),
    object_lock_retention: s3.ObjectLockRetention | None = None,
) -> s3.Bucket:
    """``object_lock_retention``: write-once bucket (S3 Object Lock, needs versioning) with that default."""
    noncurrent = s3.LifecycleRule(id="expire-old-versions", noncurrent_version_expiration=Duration.days(30))
    # A writer stopped mid-upload (a batch function at its timeout) leaves parts that no listing shows
    # and nothing else deletes: data kept, and billed, indefinitely.
    abandoned_uploads = s3.LifecycleRule(
        id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
    )
    bucket = s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.KMS,
        encryption_key=key,
        bucket_key_enabled=True,
        blocked_encryption_types=BLOCKED_ENCRYPTION,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=f"{construct_id}/",
        lifecycle_rules=[noncurrent, abandoned_uploads, *lifecycle_rules],
        # None, not False, for the other buckets: the property changes force a bucket replacement.
        object_lock_enabled=True if object_lock_retention is not None else None,
        object_lock_default_retention=object_lock_retention,
        removal_policy=removal_policy,
    )
    _acknowledge_no_replication(bucket)
    return bucket


def grant_read_under(
    bucket: s3.IBucket, grantee: iam.IGrantable, *key_patterns: str, probes_missing_keys: bool
) -> None:
    """Read the objects matching ``key_patterns`` (``"models/*"``), and list the bucket as little as the
    code allows.

    CDK's ``bucket.grant_read(grantee, "models/*")`` scopes the object actions but also allows
    ``s3:GetBucket*`` and ``s3:List*`` on the whole bucket: every key name in it (the file names data
    teams upload, export and run ids) and its configuration. Here the objects and the bucket's key get
    what that grant gives them (``s3:GetObject*``; ``kms:Decrypt``, ``kms:DescribeKey``) and the bucket
    only ``s3:ListBucket``:

    - ``probes_missing_keys=False``: listing limited to the same patterns (``s3:prefix``), for code that
      reads keys it knows exist or lists under its prefixes (training/dataload/storage.py).
    - ``probes_missing_keys=True``: listing of the whole bucket, for code that expects "no such key"
      for a missing object (the batch function's manifest, the registry's latest.json on a first run).
      S3 documents that it answers 404 for a missing key only to a caller with ``s3:ListBucket`` on the
      bucket (403 otherwise); whether a ``s3:prefix`` condition is enough for that is not documented,
      so these roles do not depend on it.
    """
    if not key_patterns:
        raise ValueError("grant_read_under needs at least one key pattern; use grant_read for the bucket")
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:GetObject*"],
        resource_arns=[bucket.arn_for_objects(pattern) for pattern in key_patterns],
    )
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:ListBucket"],
        resource_arns=[bucket.bucket_arn],
        conditions=None if probes_missing_keys else {"StringLike": {"s3:prefix": list(key_patterns)}},
    )
    if bucket.encryption_key:
        bucket.encryption_key.grant(grantee, "kms:Decrypt", "kms:DescribeKey")


def grant_put_under(bucket: s3.IBucket, grantee: iam.IGrantable, *key_patterns: str) -> None:
    """Write new objects matching ``key_patterns`` (``"scored/*"``), single-part or multipart, and nothing
    else: CDK's ``grant_put`` also allows object tags, legal holds and retention settings, and
    ``kms:Encrypt``/``kms:ReEncrypt*`` on the bucket's key, none of which an upload needs. A multipart
    upload under a KMS key needs ``kms:Decrypt`` as well as ``kms:GenerateDataKey``."""
    if not key_patterns:
        raise ValueError("grant_put_under needs at least one key pattern")
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:PutObject", "s3:AbortMultipartUpload"],
        resource_arns=[bucket.arn_for_objects(pattern) for pattern in key_patterns],
    )
    if bucket.encryption_key:
        bucket.encryption_key.grant(grantee, "kms:GenerateDataKey", "kms:Decrypt")


def refuse_other_encryption(bucket: s3.Bucket, key: kms.IKey, *key_patterns: str) -> None:
    """Deny a put under ``key_patterns`` that names another encryption than ``key``.

    A put without encryption headers gets the bucket's default (``key``). ``--sse aws:kms`` without a key
    id means the AWS-managed ``aws/s3`` key, ``--sse AES256`` SSE-S3: either leaves applicant data
    readable by any principal with s3:GetObject, no kms:Decrypt grant on this key needed.
    """
    bucket.add_to_resource_policy(
        iam.PolicyStatement(
            sid="UploadsUseTheBucketsKey",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(pattern) for pattern in key_patterns],
            conditions={
                # Only a request that names an encryption; then it must name this key's ARN.
                "Null": {"s3:x-amz-server-side-encryption": "false"},
                "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key.key_arn},
            },
        )
    )
