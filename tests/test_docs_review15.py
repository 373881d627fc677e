"""Docs statements a review found untrue of the code, each pinned to the code it describes.

Like tests/test_docs_accuracy.py, every check reads the code's own source (no infra module is imported:
that would start the CDK's JavaScript runtime), so a change on either side fails here with the doc and
the fact.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests.test_docs_accuracy import ROOT, _doc, _fenced_lines, _prose, _table, _tree

# ---- reading the code ----------------------------------------------------------------------------


def _calls(relative: str, called: str) -> Iterator[ast.Call]:
    """Every call of ``called`` (``f(...)`` or ``module.f(...)``) in a source file."""
    for node in ast.walk(_tree(relative)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == called:
                yield node


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _days(value: ast.expr | None) -> int:
    """The n of a ``Duration.days(n)``."""
    assert isinstance(value, ast.Call), "expected Duration.days(<n>)"
    assert isinstance(value.func, ast.Attribute), "expected Duration.days(<n>)"
    assert value.func.attr == "days", f"expected Duration.days(<n>), got Duration.{value.func.attr}"
    number = ast.literal_eval(value.args[0])
    assert isinstance(number, int)
    return number


def _function(relative: str, name: str) -> ast.FunctionDef:
    return next(
        node for node in ast.walk(_tree(relative)) if isinstance(node, ast.FunctionDef) and node.name == name
    )


def _request_ids(relative: str) -> list[object]:
    """The values given to every ``"request_id"`` key of a dict literal in a source file."""
    values: list[object] = []
    for node in ast.walk(_tree(relative)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "request_id":
                    values.append(ast.literal_eval(value))
    return values


# ---- README: the request id of API Gateway's own answers ------------------------------------------


def test_given_gateway_errors_then_readme_gives_them_a_request_id_and_only_the_web_acls_none() -> None:
    # Given: API Gateway's error responses fill request_id from its context; the web ACL's 429 cannot
    gateway = _request_ids("infra/gateway_responses.py")
    firewall = _request_ids("infra/firewall.py")
    assert gateway == ["$context.requestId"]
    assert firewall == [None]
    readme = _prose("README.md")
    # Then README does not say API Gateway's answers have a null request_id
    assert "`model_version` and `request_id` are `null` when API Gateway" not in readme, (
        "README says API Gateway's own errors have a null request_id; they carry $context.requestId"
    )
    # And it says which ones do
    assert re.search(
        r"`model_version` is `null` when API Gateway or its web ACL answers before the function.*?"
        r"`request_id` too when the web ACL's rate limit answers",
        readme,
    ), "README no longer says when model_version and request_id are null"


# ---- deploy.md: loading data --------------------------------------------------------------------


def _module_string(relative: str, name: str) -> str:
    for node in _tree(relative).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value
    raise AssertionError(f"{relative} has no module-level {name} = <string>")


def test_given_the_loader_task_then_deploy_md_uploads_a_file_it_reads_to_where_it_reads() -> None:
    # Given: the loader task reads credit_risk's file from <export bucket>/datasets/credit_risk/
    prefix = _module_string("infra/data.py", "DATASET_PREFIX") + "credit_risk/"
    loader_file = _module_string("training/dataload/datasets.py", "CREDIT_RISK_FILE")
    assert any(
        isinstance(arg, ast.Constant) and arg.value == "credit_risk/"
        for call in _calls("infra/data.py", "s3_url_for_object")
        for arg in ast.walk(call)
    )
    uploads = [
        line.split()
        for line in _fenced_lines(_doc("docs/deploy.md"))
        if line.startswith("aws s3 cp") and "/datasets/" in line
    ]
    assert len(uploads) == 1, "docs/deploy.md no longer has one `aws s3 cp` of the loader's input"
    words = [word for word in uploads[0][3:] if not word.startswith("--")]
    source, destination = words[0], words[1]
    # Then the file uploaded exists in a clone, is one the loader reads, and lands where it reads
    assert (ROOT / source).is_file(), f"docs/deploy.md uploads {source}, which a clone does not hold"
    assert Path(source).name in (loader_file, f"{loader_file}.gz")
    assert destination.endswith(f"/{prefix}"), f"{destination} is not the loader's {prefix}"


# ---- deploy.md: the NIST 800-53 table ---------------------------------------------------------------

# What the table's "Where" cell calls the functions each infra module acknowledges a Lambda rule for.
NIST_FUNCTION_WORDS = {
    "infra/scoring_functions.py": ("API", "batch"),
    "infra/serving.py": ("API",),
    "infra/batch_scoring.py": ("batch",),
    "infra/rollout.py": ("rollout-check",),
    "infra/snapshot_sweeper.py": ("sweeper",),
}


def test_given_a_nist_lambda_acknowledgement_then_the_table_names_every_function_it_covers() -> None:
    # Given: the NIST 800-53 Lambda rules each infra module acknowledges
    acknowledged: dict[str, set[str]] = {}
    for path in sorted((ROOT / "infra").glob("*.py")):
        relative = str(path.relative_to(ROOT))
        for node in ast.walk(_tree(relative)):
            found = re.fullmatch(r"NIST\.800\.53\.R5-(Lambda\w+)", str(getattr(node, "value", "")))
            if isinstance(node, ast.Constant) and found:
                acknowledged.setdefault(found[1], set()).add(relative)
    assert set(acknowledged) >= {"LambdaDLQ", "LambdaConcurrency", "LambdaInsideVPC"}
    where: dict[str, str] = {}
    for row in _table("docs/deploy.md", "| Rule | Where |"):
        for rule in re.split(r",\s*", row[0]):
            where[rule] = where.get(rule, "") + " " + row[1]
    # Then the table's rows for each rule name every function it is acknowledged for
    missing = sorted(
        (rule, word)
        for rule, modules in acknowledged.items()
        for module in modules
        for word in NIST_FUNCTION_WORDS[module]
        if word not in where.get(rule, "")
    )
    assert missing == [], f"docs/deploy.md's NIST table leaves out acknowledged functions: {missing}"


# ---- deploy.md: what the environment setting names ---------------------------------------------------

# A resource the `environment` row says is named after the environment, and the call and argument that
# would name it.
NAMED_RESOURCES = {
    "API": ("infra/serving.py", "RestApi", "rest_api_name"),
    "dashboard": ("infra/observability.py", "Dashboard", "dashboard_name"),
    "web ACL": ("infra/firewall.py", "CfnWebACL", "name"),
    "CodeDeploy application": ("infra/rollout.py", "LambdaApplication", "application_name"),
}


def _named_after_environment(relative: str, called: str, argument: str) -> bool:
    for call in _calls(relative, called):
        value = _keyword(call, argument)
        if isinstance(value, ast.JoinedStr) and "config.environment" in ast.unparse(value):
            return True
    return False


def test_given_the_environment_setting_then_it_names_only_resources_the_stack_names_after_it() -> None:
    row = next(row for row in _table("docs/deploy.md", "| key | default |") if row[0] == "`environment`")
    # The resources it names, up to what is only named after it in part ("and of the web ACL's log group").
    clause = re.split(r", and of |\(", row[3].split("the names of ", 1)[1])[0]
    claimed = [
        entity for entity in NAMED_RESOURCES if re.search(rf"(?<![\w-]){re.escape(entity)}(?!['\w])", clause)
    ]
    assert "API" in claimed, f"the environment row no longer lists what it names: {row[3]!r}"
    wrong = [entity for entity in claimed if not _named_after_environment(*NAMED_RESOURCES[entity])]
    assert wrong == [], f"docs/deploy.md says `environment` names the {wrong}, which the stack does not name"


# ---- batch.md: the deployment package ---------------------------------------------------------------


def test_given_the_committed_bundle_then_batch_md_states_its_share_of_the_package() -> None:
    bundle = ROOT / "model_artifacts" / "credit_risk"
    size_mb = sum(path.stat().st_size for path in bundle.iterdir() if path.is_file()) / 1e6
    stated = re.findall(
        r"with the committed champion bundle \(([\d.]+) MB of that\)", _prose("docs/batch.md")
    )
    assert len(stated) == 1, "docs/batch.md no longer states the bundle's size in the package"
    assert float(stated[0]) == round(size_mb, 1), f"the committed bundle is {size_mb:.2f} MB"


def test_given_batch_onnx_threads_then_batch_md_gives_its_default_and_says_the_stack_sets_it() -> None:
    # Given: the batch function's onnxruntime threads, read from its environment
    defaults = [
        ast.literal_eval(call.args[1])
        for call in _calls("lambdas/batch/wiring.py", "_positive_int")
        if isinstance(call.args[0], ast.Constant) and call.args[0].value == "BATCH_ONNX_THREADS"
    ]
    assert len(defaults) == 1
    set_by_stack = [
        p.name for p in (ROOT / "infra").glob("*.py") if "BATCH_ONNX_THREADS" in p.read_text("utf-8")
    ]
    batch = _prose("docs/batch.md")
    # Then batch.md gives that default and says the stack sets it (batchOnnxThreads)
    stated = re.findall(
        r"`batchOnnxThreads` \(the batch function's `BATCH_ONNX_THREADS`, default (\d+), which the "
        r"stack sets",
        batch,
    )
    assert [int(value) for value in stated] == defaults, "docs/batch.md states another default"
    assert "batch_scoring.py" in set_by_stack, "the stack no longer sets BATCH_ONNX_THREADS: see batch.md"
    # And it does not present the thread count as following the function's vCPUs by itself
    assert "`BATCH_ONNX_THREADS` = vCPUs" not in batch


# ---- deploy.md and batch.md: lifecycle rules ---------------------------------------------------------


def test_given_the_noncurrent_version_rule_then_deploy_md_says_how_long_replaced_objects_stay() -> None:
    rules = list(ast.walk(_function("infra/buckets.py", "secure_bucket")))
    days = [
        _days(_keyword(call, "noncurrent_version_expiration"))
        for call in rules
        if isinstance(call, ast.Call) and _keyword(call, "noncurrent_version_expiration") is not None
    ]
    assert len(days) == 1
    stated = re.findall(
        r"the bucket is versioned, so replaced objects stay recoverable for (\d+) days",
        _prose("docs/deploy.md"),
    )
    assert [int(value) for value in stated] == days, f"secure_bucket keeps replaced versions {days[0]} days"


def test_given_the_incoming_lifecycle_rule_then_the_docs_say_when_dropped_files_are_deleted() -> None:
    rules = [
        call
        for call in _calls("infra/batch_scoring.py", "LifecycleRule")
        if "expire-incoming" in ast.unparse(_keyword(call, "id") or ast.Constant(None))
    ]
    assert len(rules) == 1
    days = _days(_keyword(rules[0], "expiration"))
    for name in ("docs/deploy.md", "docs/batch.md"):
        stated = re.findall(
            r"Files under `incoming/` are deleted (\d+) days after their upload", _prose(name)
        )
        assert [int(value) for value in stated] == [days], (
            f"{name}: the scoring bucket deletes inputs after {days} days"
        )
