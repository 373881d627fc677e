"""Permission replay: record the AWS calls real code makes, then judge each against the IAM policy that a
synthesised CloudFormation template gives the calling role.

moto does not enforce IAM, so no other test can see a missing permission. Three explicit parts:

- recording (:class:`CallRecorder`): botocore hooks on a boto3 session keep the service, the operation,
  the parameters that decide the IAM resource (Bucket, Key, VersionId, CopySource, Prefix, QueueUrl, ...)
  and the HTTP status (S3 answers 404 for a missing key only to a caller allowed s3:ListBucket);
- mapping (:data:`OPERATIONS`): (service, operation) -> the IAM actions and resource ARNs it needs,
  KMS included for objects of a bucket encrypted with a customer-managed key in the template. An
  operation missing from the table raises :class:`ReplayError` naming it, never a silent pass;
- evaluating (:class:`Stack`, :func:`evaluate`): explicit denies first (role policies and the resource's
  own bucket, queue or key policy), then Allow statements with IAM wildcard matching. Conditions are
  evaluated for the keys in :data:`CONDITION_KEYS`; any other key, operator or unresolvable expression
  in a statement that applies to the call raises instead of being taken as satisfied.

Stack resources are named by their logical ids (``arn:aws:s3:::DataBucket1234/incoming/x.csv``): the
test maps each emulated bucket or queue name to the logical resource that plays its part (:class:`Names`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import boto3

ACCOUNT = "123456789012"  # moto's default account, also used for the template's AWS::AccountId
REGION = "us-east-1"
PARTITION = "aws"

Statement = Mapping[str, Any]


class ReplayError(Exception):
    """The replay cannot judge a call: an unmapped operation or name, an unknown expression or condition."""


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


# ---------------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------------

_SHOWN_PARAMS = (
    "Bucket",
    "Key",
    "VersionId",
    "CopySource",
    "Prefix",
    "QueueUrl",
    "QueueName",
    "IfMatch",
    "IfNoneMatch",
)
_PENDING = "iam_replay_pending"


@dataclass(frozen=True)
class RecordedCall:
    caller: str  # who made it: "batch function", "event source mapping", ...
    service: str  # botocore's hyphenised service id: "s3", "sqs"
    operation: str  # "GetObject"
    params: Mapping[str, Any]  # the API parameters, payloads (Body) left out
    status: int | None = None  # HTTP status of the answer; None when no answer arrived

    def __str__(self) -> str:
        shown = {name: self.params[name] for name in _SHOWN_PARAMS if name in self.params}
        return f"[{self.caller}] {self.service}:{self.operation} {shown} -> HTTP {self.status}"


class CallRecorder:
    """Records every call of the clients made from its sessions (thread-safe: s3transfer uses threads)."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()

    def session(self, caller: str) -> boto3.Session:
        """A boto3 session whose clients record; clients copy the session's hooks when created."""
        session = boto3.Session()
        session.events.register("before-parameter-build", self._before(caller))
        session.events.register("after-call", self._after)
        session.events.register("after-call-error", self._after)
        return session

    def operations(self, caller: str | None = None) -> set[str]:
        return {call.operation for call in self.calls if caller is None or call.caller == caller}

    @staticmethod
    def _before(caller: str) -> Callable[..., None]:
        def remember(params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
            kept = {
                name: copy.deepcopy(value)
                for name, value in params.items()
                if name != "Body" and not hasattr(value, "read")
            }
            service = str(model.service_model.service_id.hyphenize())
            context[_PENDING] = RecordedCall(caller, service, str(model.name), kept)

        return remember

    def _after(self, context: dict[str, Any], http_response: Any = None, **_: Any) -> None:
        pending = context.pop(_PENDING, None)
        if pending is None:
            return
        status = getattr(http_response, "status_code", None)
        with self._lock:
            self.calls.append(dataclasses.replace(pending, status=status))


# ---------------------------------------------------------------------------------------------------
# The template
# ---------------------------------------------------------------------------------------------------

_PSEUDO_PARAMETERS = {
    "AWS::Partition": PARTITION,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
}
_REF_FORMATS = {
    "AWS::S3::Bucket": "{name}",
    "AWS::KMS::Key": "{name}",
    "AWS::IAM::Role": "{name}",
    "AWS::Lambda::Function": "{name}",
    "AWS::SQS::Queue": "https://sqs.{region}.amazonaws.com/{account}/{name}",
    "AWS::IAM::ManagedPolicy": "arn:{partition}:iam::{account}:policy/{name}",
}
_ARN_FORMATS = {
    "AWS::S3::Bucket": "arn:{partition}:s3:::{name}",
    "AWS::SQS::Queue": "arn:{partition}:sqs:{region}:{account}:{name}",
    "AWS::KMS::Key": "arn:{partition}:kms:{region}:{account}:key/{name}",
    "AWS::IAM::Role": "arn:{partition}:iam::{account}:role/{name}",
    "AWS::Lambda::Function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "AWS::Logs::LogGroup": "arn:{partition}:logs:{region}:{account}:log-group:{name}:*",
}
# AWS-managed policies a role of the stack may attach, by ARN (their published documents).
AWS_MANAGED_POLICIES: dict[str, list[Statement]] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ],
}
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class SourcedStatement:
    source: str  # "AWS::IAM::Policy <logical id>", "AWS::S3::BucketPolicy <logical id>", ...
    statement: Statement


class Stack:
    """A synthesised template; expressions resolve to strings naming stack resources by logical id."""

    def __init__(self, template: Mapping[str, Any]) -> None:
        self.template = template
        self.resources: Mapping[str, Mapping[str, Any]] = template["Resources"]

    # -- resources ----------------------------------------------------------------------------------

    def of_type(self, kind: str) -> dict[str, Mapping[str, Any]]:
        return {name: r for name, r in self.resources.items() if r["Type"] == kind}

    def type_of(self, logical_id: str) -> str:
        if logical_id not in self.resources:
            raise ReplayError(f"the template has no resource {logical_id!r}")
        kind: str = self.resources[logical_id]["Type"]
        return kind

    def properties(self, logical_id: str) -> Mapping[str, Any]:
        self.type_of(logical_id)
        found: Mapping[str, Any] = self.resources[logical_id].get("Properties", {})
        return found

    # -- expressions --------------------------------------------------------------------------------

    def resolve(self, value: Any, names: Mapping[str, str] | None = None) -> str:
        """A CloudFormation value as a string: Ref, Fn::GetAtt (Arn), Fn::Join and Fn::Sub are understood.

        A stack resource is named by its logical id, or by ``names[logical_id]`` when ``names`` is given
        (then every resource it meets must be in it).
        """
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value).lower() if isinstance(value, bool) else str(value)
        if isinstance(value, dict) and len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return self._ref(argument, names)
            if function == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self._get_att(logical_id, attribute, names)
            if function == "Fn::Join":
                separator, parts = argument
                return str(separator).join(self.resolve(part, names) for part in parts)
            if function == "Fn::Sub":
                return self._sub(argument, names)
        raise ReplayError(
            f"cannot resolve {json.dumps(value)}: only Ref, Fn::GetAtt, Fn::Join and Fn::Sub are understood"
        )

    def arn(self, logical_id: str, names: Mapping[str, str] | None = None) -> str:
        return self._get_att(logical_id, "Arn", names)

    def _name(self, logical_id: str, names: Mapping[str, str] | None) -> str:
        if names is None:
            return logical_id
        if logical_id not in names:
            raise ReplayError(f"{logical_id} has no emulated counterpart (known: {sorted(names)})")
        return names[logical_id]

    def _format(self, table: Mapping[str, str], logical_id: str, names: Mapping[str, str] | None) -> str:
        kind = self.type_of(logical_id)
        if kind not in table:
            raise ReplayError(f"cannot name {logical_id} ({kind}): the replay knows {sorted(table)}")
        return table[kind].format(
            partition=PARTITION, region=REGION, account=ACCOUNT, name=self._name(logical_id, names)
        )

    def _ref(self, logical_id: str, names: Mapping[str, str] | None) -> str:
        if logical_id in _PSEUDO_PARAMETERS:
            return _PSEUDO_PARAMETERS[logical_id]
        return self._format(_REF_FORMATS, logical_id, names)

    def _get_att(self, logical_id: str, attribute: str, names: Mapping[str, str] | None) -> str:
        if attribute != "Arn":
            raise ReplayError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute}: only Arn is understood")
        return self._format(_ARN_FORMATS, logical_id, names)

    def _sub(self, argument: Any, names: Mapping[str, str] | None) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def substitute(match: re.Match[str]) -> str:
            variable = match.group(1)
            if variable.startswith("!"):
                return "${" + variable[1:] + "}"
            if variable in variables:
                return self.resolve(variables[variable], names)
            if "." in variable:
                logical_id, attribute = variable.split(".", 1)
                return self._get_att(logical_id, attribute, names)
            return self._ref(variable, names)

        return _SUB_VARIABLE.sub(substitute, str(text))

    # -- the parts a Lambda function is wired to ----------------------------------------------------

    def function(self, service_name: str) -> str:
        """The function whose Powertools service name is ``service_name`` (a stable property)."""
        found = [
            name
            for name, resource in self.of_type("AWS::Lambda::Function").items()
            if resource["Properties"]
            .get("Environment", {})
            .get("Variables", {})
            .get("POWERTOOLS_SERVICE_NAME")
            == service_name
        ]
        if len(found) != 1:
            raise ReplayError(f"expected one function with POWERTOOLS_SERVICE_NAME={service_name}: {found}")
        return found[0]

    def role_of(self, function: str) -> str:
        properties = self.properties(function)
        if "VpcConfig" in properties:
            raise ReplayError(
                f"{function} runs in a VPC: its calls would also pass VPC endpoint policies, "
                "which the replay does not evaluate"
            )
        role = properties.get("Role")
        if not (isinstance(role, dict) and list(role) == ["Fn::GetAtt"] and role["Fn::GetAtt"][1] == "Arn"):
            raise ReplayError(f"{function}'s Role is not a role of the stack: {role}")
        logical_id: str = role["Fn::GetAtt"][0]
        if self.type_of(logical_id) != "AWS::IAM::Role":
            raise ReplayError(f"{function}'s Role {logical_id} is not an AWS::IAM::Role")
        return logical_id

    def environment(self, function: str, names: Mapping[str, str]) -> dict[str, str]:
        """The function's environment with stack resources replaced by their emulated names."""
        variables = self.properties(function).get("Environment", {}).get("Variables", {})
        return {name: self.resolve(value, names) for name, value in variables.items()}

    def event_source_queue(self, function: str) -> str:
        """The SQS queue an event source mapping feeds ``function`` from."""
        queues = [
            mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
            for mapping in self.of_type("AWS::Lambda::EventSourceMapping").values()
            if mapping["Properties"].get("FunctionName")
            in ({"Ref": function}, {"Fn::GetAtt": [function, "Arn"]})
        ]
        if len(queues) != 1:
            raise ReplayError(f"expected one SQS event source for {function}: {queues}")
        return str(queues[0])

    def bucket_notifying(self, queue: str) -> str:
        """The bucket whose event notifications go to ``queue`` (CDK's Custom::S3BucketNotifications)."""
        target = {"Fn::GetAtt": [queue, "Arn"]}
        buckets = [
            resource["Properties"]["BucketName"]["Ref"]
            for resource in self.of_type("Custom::S3BucketNotifications").values()
            if any(
                configuration.get("QueueArn") == target
                for configuration in resource["Properties"]["NotificationConfiguration"].get(
                    "QueueConfigurations", []
                )
            )
        ]
        if len(buckets) != 1:
            raise ReplayError(f"expected one bucket notifying {queue}: {buckets}")
        return str(buckets[0])

    def bundle_location(self, function: str) -> tuple[str, str]:
        """(bucket logical id, key prefix) of the function's MODEL_BUNDLE_URI."""
        variables = self.properties(function).get("Environment", {}).get("Variables", {})
        if "MODEL_BUNDLE_URI" not in variables:
            raise ReplayError(f"{function} has no MODEL_BUNDLE_URI")
        bucket, _, prefix = self.resolve(variables["MODEL_BUNDLE_URI"]).removeprefix("s3://").partition("/")
        if self.type_of(bucket) != "AWS::S3::Bucket":
            raise ReplayError(f"{function}'s MODEL_BUNDLE_URI names {bucket}, not a bucket of the stack")
        return bucket, prefix

    def is_versioned(self, bucket: str) -> bool:
        status: str | None = self.properties(bucket).get("VersioningConfiguration", {}).get("Status")
        return status == "Enabled"

    def bucket_key(self, bucket: str) -> tuple[str | None, bool]:
        """(logical id of the customer-managed KMS key encrypting new objects, or None; bucket key on)."""
        rules = (
            self.properties(bucket).get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
        )
        for rule in rules:
            default = rule.get("ServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") not in ("aws:kms", "aws:kms:dsse"):
                continue
            key = default.get("KMSMasterKeyID")
            if key is None:
                return None, False  # the AWS-managed aws/s3 key: its policy lets the account's callers use it
            if isinstance(key, dict) and list(key) == ["Fn::GetAtt"] and key["Fn::GetAtt"][1] == "Arn":
                return str(key["Fn::GetAtt"][0]), bool(rule.get("BucketKeyEnabled"))
            raise ReplayError(f"{bucket} is encrypted with a key outside the stack: {key}")
        return None, False

    # -- policies -----------------------------------------------------------------------------------

    def identity_statements(self, role: str) -> list[SourcedStatement]:
        """Inline policies, AWS::IAM::Policy / ManagedPolicy attached to the role, its ManagedPolicyArns."""
        properties = self.properties(role)
        if "PermissionsBoundary" in properties:
            raise ReplayError(f"{role} has a permissions boundary, which the replay does not evaluate")
        found = [
            SourcedStatement(f"inline policy {policy['PolicyName']} of {role}", statement)
            for policy in properties.get("Policies", [])
            for statement in as_list(policy["PolicyDocument"]["Statement"])
        ]
        for name, resource in self.resources.items():
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and {
                "Ref": role
            } in resource["Properties"].get("Roles", []):
                document = resource["Properties"]["PolicyDocument"]
                found += [
                    SourcedStatement(f"{resource['Type']} {name}", s) for s in as_list(document["Statement"])
                ]
        for arn in properties.get("ManagedPolicyArns", []):
            found += self._managed_policy(arn)
        return found

    def _managed_policy(self, arn: Any) -> list[SourcedStatement]:
        if isinstance(arn, dict) and list(arn) == ["Ref"] and arn["Ref"] in self.resources:
            document = self.properties(arn["Ref"])["PolicyDocument"]
            return [
                SourcedStatement(f"AWS::IAM::ManagedPolicy {arn['Ref']}", s) for s in document["Statement"]
            ]
        resolved = self.resolve(arn)
        if resolved not in AWS_MANAGED_POLICIES:
            raise ReplayError(f"managed policy {resolved} is not known to the replay (AWS_MANAGED_POLICIES)")
        return [SourcedStatement(f"managed policy {resolved}", s) for s in AWS_MANAGED_POLICIES[resolved]]

    def resource_statements(self, owner: str) -> list[SourcedStatement]:
        """The resource's own policy: a bucket's BucketPolicy, a queue's QueuePolicy, a key's KeyPolicy."""
        kind = self.type_of(owner)
        if kind == "AWS::KMS::Key":
            if "KeyPolicy" not in self.properties(owner):
                raise ReplayError(f"{owner} has no KeyPolicy in the template")
            policy = self.properties(owner)["KeyPolicy"]
            return [SourcedStatement(f"key policy of {owner}", s) for s in as_list(policy["Statement"])]
        policy_type, reference = {
            "AWS::S3::Bucket": ("AWS::S3::BucketPolicy", "Bucket"),
            "AWS::SQS::Queue": ("AWS::SQS::QueuePolicy", "Queues"),
        }.get(kind, (None, None))
        if policy_type is None or reference is None:
            raise ReplayError(f"the replay does not know where the resource policy of {owner} ({kind}) is")
        return [
            SourcedStatement(f"{policy_type} {name}", statement)
            for name, resource in self.of_type(policy_type).items()
            if {"Ref": owner} in as_list(resource["Properties"][reference])
            for statement in as_list(resource["Properties"]["PolicyDocument"]["Statement"])
        ]


# ---------------------------------------------------------------------------------------------------
# Mapping calls to what IAM checks
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """Emulated bucket and queue names -> logical id of the stack resource that plays that part."""

    buckets: Mapping[str, str] = field(default_factory=dict)
    queues: Mapping[str, str] = field(default_factory=dict)

    def bucket(self, name: str) -> str:
        if name not in self.buckets:
            raise ReplayError(f"bucket {name!r} is not mapped to a bucket of the stack: {dict(self.buckets)}")
        return self.buckets[name]

    def queue(self, url_or_name: str) -> str:
        name = url_or_name.rstrip("/").rsplit("/", 1)[-1]
        if name not in self.queues:
            raise ReplayError(
                f"queue {url_or_name!r} is not mapped to a queue of the stack: {dict(self.queues)}"
            )
        return self.queues[name]


@dataclass(frozen=True)
class Requirement:
    """One authorisation a call needs: ``action`` on ``resource``, with the request's condition keys."""

    call: RecordedCall
    action: str
    resource: str
    owner: str  # logical id of the resource whose own policy (bucket, queue, key policy) also applies
    context: Mapping[str, str]
    why: str = ""

    def __str__(self) -> str:
        keys = {k: v for k, v in self.context.items() if k != "aws:SecureTransport"}
        return (
            f"{self.action} on {self.resource}"
            + (f" with {keys}" if keys else "")
            + (f" ({self.why})" if self.why else "")
        )


class _Needs:
    """Builds the requirements of one call (the functions in OPERATIONS receive one)."""

    def __init__(self, stack: Stack, names: Names, call: RecordedCall, *, secure_transport: bool) -> None:
        self.stack, self.names, self.call = stack, names, call
        self.params = call.params
        self._transport = {"aws:SecureTransport": "true" if secure_transport else "false"}

    @property
    def succeeded(self) -> bool:
        return self.call.status is not None and 200 <= self.call.status < 300

    def s3_object(self, action: str, bucket: str, key: str, why: str = "", **context: str) -> Requirement:
        owner = self.names.bucket(bucket)
        return Requirement(
            self.call, action, f"{self.stack.arn(owner)}/{key}", owner, {**self._transport, **context}, why
        )

    def s3_bucket(self, action: str, bucket: str, why: str = "", **context: str) -> Requirement:
        owner = self.names.bucket(bucket)
        return Requirement(
            self.call, action, self.stack.arn(owner), owner, {**self._transport, **context}, why
        )

    def kms(self, bucket: str, key: str, *actions: str, why: str) -> list[Requirement]:
        """KMS actions S3 performs with the caller's permissions on the bucket's customer-managed key."""
        owner = self.names.bucket(bucket)
        key_id, bucket_key = self.stack.bucket_key(owner)
        if key_id is None:
            return []
        bucket_arn = self.stack.arn(owner)
        context = {
            **self._transport,
            "kms:ViaService": f"s3.{REGION}.amazonaws.com",
            "kms:CallerAccount": ACCOUNT,
            "kms:EncryptionContext:aws:s3:arn": bucket_arn if bucket_key else f"{bucket_arn}/{key}",
        }
        return [Requirement(self.call, a, self.stack.arn(key_id), key_id, context, why) for a in actions]

    def sqs(self, action: str, queue: str) -> Requirement:
        owner = self.names.queue(queue)
        return Requirement(self.call, action, self.stack.arn(owner), owner, dict(self._transport))

    def missing_key_listing(self) -> list[Requirement]:
        """S3 answers 404 (not 403) for a missing key only to a caller allowed s3:ListBucket on the bucket."""
        if self.call.status != 404:
            return []
        why = "S3 answers 404 rather than 403 for a missing key only with s3:ListBucket"
        return [self.s3_bucket("s3:ListBucket", self.params["Bucket"], why)]

    def listing_context(self) -> dict[str, str]:
        names = {"Prefix": "s3:prefix", "Delimiter": "s3:delimiter", "MaxKeys": "s3:max-keys"}
        return {key: str(self.params[param]) for param, key in names.items() if param in self.params}

    def refuse(self, *params: str) -> None:
        present = [p for p in params if p in self.params]
        if present:
            raise ReplayError(f"{self.call.service}:{self.call.operation} with {present} is not modelled")


def _versioned(action: str, params: Mapping[str, Any]) -> str:
    return f"{action}Version" if params.get("VersionId") else action


def _read_object(needs: _Needs) -> list[Requirement]:
    p = needs.params
    found = [needs.s3_object(_versioned("s3:GetObject", p), p["Bucket"], p["Key"])]
    found += needs.missing_key_listing()
    if needs.call.operation == "GetObject" and needs.succeeded:  # HEAD decrypts nothing
        found += needs.kms(p["Bucket"], p["Key"], "kms:Decrypt", why="reading an SSE-KMS object")
    return found


def _put_object(needs: _Needs) -> list[Requirement]:
    p = needs.params
    needs.refuse("SSEKMSKeyId", "ACL", "GrantRead", "GrantFullControl", "GrantReadACP", "GrantWriteACP")
    context = {"s3:if-none-match": str(p["IfNoneMatch"])} if "IfNoneMatch" in p else {}
    if "ServerSideEncryption" in p:  # SSEKMSKeyId is refused above
        context["s3:x-amz-server-side-encryption"] = str(p["ServerSideEncryption"])
    found = [needs.s3_object("s3:PutObject", p["Bucket"], p["Key"], **context)]
    extras = {
        "Tagging": "s3:PutObjectTagging",
        "ObjectLockMode": "s3:PutObjectRetention",
        "ObjectLockLegalHoldStatus": "s3:PutObjectLegalHold",
    }
    found += [
        needs.s3_object(action, p["Bucket"], p["Key"]) for param, action in extras.items() if param in p
    ]
    return found + needs.kms(p["Bucket"], p["Key"], "kms:GenerateDataKey", why="writing an SSE-KMS object")


def _create_multipart_upload(needs: _Needs) -> list[Requirement]:
    p = needs.params
    # S3 decrypts the upload's data key for every part: a KMS multipart upload needs both actions.
    return _put_object(needs) + needs.kms(
        p["Bucket"], p["Key"], "kms:Decrypt", why="SSE-KMS multipart upload"
    )


def _upload_part(needs: _Needs) -> list[Requirement]:
    return [needs.s3_object("s3:PutObject", needs.params["Bucket"], needs.params["Key"])]


def _object_action(action: str) -> Callable[[_Needs], list[Requirement]]:
    def needs_action(needs: _Needs) -> list[Requirement]:
        p = needs.params
        return [needs.s3_object(_versioned(action, p), p["Bucket"], p["Key"])]

    return needs_action


def _copy_object(needs: _Needs) -> list[Requirement]:
    p = needs.params
    source = p["CopySource"]
    if isinstance(source, str):
        path, _, query = source.lstrip("/").partition("?")
        bucket, _, key = unquote(path).partition("/")
        source = {"Bucket": bucket, "Key": key, **({"VersionId": query.split("=", 1)[1]} if query else {})}
    read = needs.s3_object(
        _versioned("s3:GetObject", source), source["Bucket"], source["Key"], why="copy source"
    )
    decrypt = needs.kms(source["Bucket"], source["Key"], "kms:Decrypt", why="reading the SSE-KMS copy source")
    return [read, *decrypt, *_put_object(needs)]


def _delete_objects(needs: _Needs) -> list[Requirement]:
    bucket = needs.params["Bucket"]
    return [
        needs.s3_object(_versioned("s3:DeleteObject", item), bucket, item["Key"])
        for item in needs.params["Delete"]["Objects"]
    ]


def _bucket_action(action: str) -> Callable[[_Needs], list[Requirement]]:
    def needs_action(needs: _Needs) -> list[Requirement]:
        return [needs.s3_bucket(action, needs.params["Bucket"], **needs.listing_context())]

    return needs_action


def _queue_action(action: str) -> Callable[[_Needs], list[Requirement]]:
    def needs_action(needs: _Needs) -> list[Requirement]:
        return [needs.sqs(action, needs.params.get("QueueUrl") or needs.params["QueueName"])]

    return needs_action


# (service, operation) -> the authorisations it needs. Extend it when the code calls something new.
OPERATIONS: dict[tuple[str, str], Callable[[_Needs], list[Requirement]]] = {
    ("s3", "GetObject"): _read_object,
    ("s3", "HeadObject"): _read_object,
    ("s3", "PutObject"): _put_object,
    ("s3", "CreateMultipartUpload"): _create_multipart_upload,
    ("s3", "UploadPart"): _upload_part,
    ("s3", "CompleteMultipartUpload"): _upload_part,
    ("s3", "AbortMultipartUpload"): _object_action("s3:AbortMultipartUpload"),
    ("s3", "ListParts"): _object_action("s3:ListMultipartUploadParts"),
    ("s3", "CopyObject"): _copy_object,
    ("s3", "DeleteObject"): _object_action("s3:DeleteObject"),
    ("s3", "DeleteObjects"): _delete_objects,
    ("s3", "GetObjectTagging"): _object_action("s3:GetObjectTagging"),
    ("s3", "ListObjectsV2"): _bucket_action("s3:ListBucket"),
    ("s3", "ListObjects"): _bucket_action("s3:ListBucket"),
    ("s3", "ListObjectVersions"): _bucket_action("s3:ListBucketVersions"),
    ("s3", "HeadBucket"): _bucket_action("s3:ListBucket"),
    ("sqs", "ReceiveMessage"): _queue_action("sqs:ReceiveMessage"),
    ("sqs", "DeleteMessage"): _queue_action("sqs:DeleteMessage"),
    ("sqs", "DeleteMessageBatch"): _queue_action("sqs:DeleteMessage"),
    ("sqs", "ChangeMessageVisibility"): _queue_action("sqs:ChangeMessageVisibility"),
    ("sqs", "ChangeMessageVisibilityBatch"): _queue_action("sqs:ChangeMessageVisibility"),
    ("sqs", "GetQueueAttributes"): _queue_action("sqs:GetQueueAttributes"),
    ("sqs", "GetQueueUrl"): _queue_action("sqs:GetQueueUrl"),
    ("sqs", "SendMessage"): _queue_action("sqs:SendMessage"),
    ("sqs", "SendMessageBatch"): _queue_action("sqs:SendMessage"),
}


def requirements(
    stack: Stack, names: Names, call: RecordedCall, *, secure_transport: bool = True
) -> list[Requirement]:
    mapping = OPERATIONS.get((call.service, call.operation))
    if mapping is None:
        raise ReplayError(
            f"no IAM mapping for {call.service}:{call.operation} (called as {call}); "
            "add it to OPERATIONS in tests/infra/iam_replay.py"
        )
    return mapping(_Needs(stack, names, call, secure_transport=secure_transport))


# ---------------------------------------------------------------------------------------------------
# Evaluating
# ---------------------------------------------------------------------------------------------------

# Condition keys the replay gives a value to whenever the request has one (compared case-insensitively).
CONDITION_KEYS = frozenset(
    key.lower()
    for key in (
        "aws:SecureTransport",
        "s3:prefix",
        "s3:delimiter",
        "s3:max-keys",
        "s3:if-none-match",
        "s3:x-amz-server-side-encryption",
        "s3:x-amz-server-side-encryption-aws-kms-key-id",
        "kms:ViaService",
        "kms:CallerAccount",
        "kms:EncryptionContext:aws:s3:arn",
    )
)


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM matching: ``*`` any run of characters (``/`` included), ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda expected, actual: expected == actual,
    "StringEqualsIgnoreCase": lambda expected, actual: expected.lower() == actual.lower(),
    "StringLike": _glob,
    "ArnEquals": _glob,
    "ArnLike": _glob,
    "Bool": lambda expected, actual: expected.lower() == actual.lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def _condition_holds(stack: Stack, condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    present = {key.lower(): value for key, value in context.items()}
    for operator, tests in condition.items():
        base = operator.removesuffix("IfExists")
        if ":" in base or (base not in _MATCHERS and base not in _NEGATED and base != "Null"):
            raise ReplayError(f"condition operator {operator} is not evaluated by the replay")
        for key, expected in tests.items():
            if key.lower() not in CONDITION_KEYS:
                raise ReplayError(
                    f"condition key {key!r} ({operator}) cannot be evaluated by the replay: it is never "
                    "taken as satisfied; teach CONDITION_KEYS and the requirements its value"
                )
            values = [stack.resolve(value) for value in as_list(expected)]
            actual = present.get(key.lower())
            if base == "Null":
                holds = all((actual is None) == (value.lower() == "true") for value in values)
            elif base in _NEGATED:  # IAM: a negated operator holds when the key is absent
                holds = actual is None or not any(_MATCHERS[_NEGATED[base]](v, actual) for v in values)
            elif actual is None:
                holds = base != operator  # ...IfExists holds without the key, the plain operator does not
            else:
                holds = any(_MATCHERS[base](value, actual) for value in values)
            if not holds:
                return False
    return True


def _statement_applies(stack: Stack, statement: Statement, requirement: Requirement) -> bool:
    """Action, then Resource, then Condition (an unknown condition only matters once the rest matches)."""
    for positive, negative, value, ignore_case in (
        ("Action", "NotAction", requirement.action, True),
        ("Resource", "NotResource", requirement.resource, False),
    ):
        if positive in statement:
            patterns, wanted = statement[positive], True
        elif negative in statement:
            patterns, wanted = statement[negative], False
        else:
            raise ReplayError(f"statement without {positive} or {negative}: {json.dumps(statement)}")
        matched = any(
            _glob(stack.resolve(pattern), value, ignore_case=ignore_case) for pattern in as_list(patterns)
        )
        if matched != wanted:
            return False
    return _condition_holds(stack, statement.get("Condition", {}), requirement.context)


Principal = Literal["role", "account", "other"]


def _principal(stack: Stack, statement: Statement, role_arn: str) -> Principal:
    """Whom a resource-policy statement names: this role (or everyone), the account, or someone else."""
    if "NotPrincipal" in statement:
        raise ReplayError(f"NotPrincipal is not evaluated by the replay: {json.dumps(statement)}")
    principal = statement.get("Principal")
    if principal == "*":
        return "role"
    if not isinstance(principal, dict):
        raise ReplayError(
            f"resource policy statement without a Principal the replay understands: {principal}"
        )
    found: Principal = "other"
    for kind, values in principal.items():
        if kind in ("Service", "Federated", "CanonicalUser"):
            continue
        if kind != "AWS":
            raise ReplayError(f"principal type {kind} is not evaluated by the replay")
        for value in as_list(values):
            arn = stack.resolve(value)
            if arn in ("*", role_arn):
                return "role"
            if arn in (ACCOUNT, f"arn:{PARTITION}:iam::{ACCOUNT}:root"):
                found = "account"
    return found


@dataclass(frozen=True)
class Decision:
    requirement: Requirement
    allowed: bool
    reason: str


def evaluate(stack: Stack, role: str, requirement: Requirement) -> Decision:
    role_arn = stack.arn(role)
    identity = stack.identity_statements(role)
    resource = [
        (s, _principal(stack, s.statement, role_arn)) for s in stack.resource_statements(requirement.owner)
    ]

    def applies(sourced: SourcedStatement, effect: str) -> bool:
        return sourced.statement["Effect"] == effect and _statement_applies(
            stack, sourced.statement, requirement
        )

    denies = [s for s in identity if applies(s, "Deny")]
    denies += [s for s, whom in resource if whom != "other" and applies(s, "Deny")]
    if denies:
        return Decision(requirement, False, f"explicitly denied by {', '.join(s.source for s in denies)}")
    allows = [s for s in identity if applies(s, "Allow")]
    direct = [s for s, whom in resource if whom == "role" and applies(s, "Allow")]
    delegated = [s for s, whom in resource if whom == "account" and applies(s, "Allow")]
    if direct:
        return Decision(requirement, True, f"allowed by {direct[0].source}")
    if requirement.action.startswith("kms:"):
        # A key's own policy decides: role policies count only where it delegates to the account's IAM.
        if allows and delegated:
            return Decision(
                requirement, True, f"allowed by {allows[0].source} ({delegated[0].source} delegates)"
            )
        if allows:
            return Decision(
                requirement, False, f"the key policy of {requirement.owner} does not delegate to IAM"
            )
    elif allows:
        return Decision(requirement, True, f"allowed by {allows[0].source}")
    return Decision(requirement, False, "no statement allows it (implicit deny)")


def check(
    stack: Stack, role: str, calls: Sequence[RecordedCall], names: Names, *, secure_transport: bool = True
) -> list[Decision]:
    """A decision for every authorisation every call needs."""
    return [
        evaluate(stack, role, requirement)
        for call in calls
        for requirement in requirements(stack, names, call, secure_transport=secure_transport)
    ]


def denied(
    stack: Stack, role: str, calls: Sequence[RecordedCall], names: Names, *, secure_transport: bool = True
) -> list[Decision]:
    return [d for d in check(stack, role, calls, names, secure_transport=secure_transport) if not d.allowed]


def report(stack: Stack, role: str, decisions: Sequence[Decision]) -> str:
    """The denied calls with the role's statements for each action: the evidence for a missing permission."""
    lines = [f"{len(decisions)} authorisation(s) the role {role} does not have:"]
    for decision in decisions:
        requirement = decision.requirement
        lines += [
            f"- call: {requirement.call}",
            f"  needs: {requirement}",
            f"  decision: {decision.reason}",
            f"  statements of the role for {requirement.action}:",
        ]
        related = [
            s
            for s in stack.identity_statements(role)
            if any(
                _glob(str(a), requirement.action, ignore_case=True)
                for a in as_list(s.statement.get("Action", []))
            )
        ]
        lines += [f"    {s.source}: {_shown(stack, s.statement)}" for s in related] or ["    (none)"]
    return "\n".join(lines)


def _shown(stack: Stack, statement: Statement) -> str:
    def resolved(value: Any) -> Any:
        try:
            return stack.resolve(value)
        except ReplayError:
            return value

    shown = {
        key: [resolved(v) for v in as_list(value)] if key in ("Resource", "NotResource") else value
        for key, value in statement.items()
    }
    return json.dumps(shown)
