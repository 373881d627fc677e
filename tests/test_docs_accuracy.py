"""The docs against the code: every setting, command, flag, code, output, alarm, path and name they give.

What a platform engineer, a data team or an API client copies from README.md and docs/ must exist with
that spelling, and the numbers the docs state as facts of the code must be the code's. Each check reads
the code itself (its source, its config validation or the commands' own --help), never a copy of it, so
a rename on either side fails here with the doc, the name and where to look.
"""

from __future__ import annotations

import ast
import io
import json
import re
import runpy
import sys
import tomllib
import warnings
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from functools import cache
from http import HTTPStatus
from pathlib import Path

import pytest

from infra.config import CONTEXT_KEYS, ConfigError, config_from_context

ROOT = Path(__file__).resolve().parents[1]
# The docs the team's readers work from.
DOCS = ("README.md", "docs/deploy.md", "docs/batch.md", "docs/performance.md", "lambdas/scoring/README.md")
# Where a name the docs give in code font must appear (this file excluded: it names them all).
SOURCE_GLOBS = (
    "app.py",
    "Makefile",
    "cdk.json",
    "package.json",
    "pyproject.toml",
    ".ci/run",
    "training/Dockerfile",
    "lambdas/**/*.py",
    "infra/**/*.py",
    "training/**/*.py",
    "localapi/**/*.py",
    "demo/**/*.py",
    "benchmarks/**/*.py",
    "tests/**/*.py",
)
# Names the docs give in code font that are AWS's or another tool's, not this repository's.
EXTERNAL_NAMES = frozenset(
    {
        "BlockedRequests",  # AWS WAF metric
        "DELETE_FAILED",  # CloudFormation stack states
        "ROLLBACK_FAILED",
        "DependencyViolation",  # EC2 error code
        "MFA_SETUP",  # Cognito challenges
        "NEW_PASSWORD_REQUIRED",
        "PutBucketPolicy",  # S3 API action
        "QUERY_DML",  # MariaDB audit plugin event the stack leaves off
        "TestInvokeMethod",  # API Gateway API action
        "WAFV2",  # AWS/WAFV2 metric namespace
        "ServingApiAccount",  # logical ids CDK gives the RestApi's account-setting children
        "ServingApiCloudWatchRole",
        "libarrow_acero",  # pyarrow's shared libraries
        "libarrow_dataset",
        "libarrow_substrait",
    }
)
# Top-level entries of the repository: a code-font token starting with one is a path that must exist.
REPO_ENTRIES = (
    "training/",
    "lambdas/",
    "infra/",
    "tests/",
    "benchmarks/",
    "localapi/",
    "demo/",
    "model_artifacts/",
    "docs/",
    ".ci/",
    "app.py",
    "cdk.json",
    "Makefile",
    "pyproject.toml",
    "uv.lock",
    "package.json",
)
ALARM_FACTORIES = frozenset({"alarm_on_any", "alarm_on_sustained", "Alarm", "create_alarm"})


# ---- reading the docs ----------------------------------------------------------------------------


@cache
def _doc(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _prose(name: str) -> str:
    """The doc with every run of whitespace as one space, so a sentence matches across line breaks."""
    return " ".join(_doc(name).split())


def _code_spans(text: str) -> list[str]:
    """Inline code (a span may break across lines, as Markdown allows)."""
    without_fences = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return [" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", without_fences)]


def _fenced_lines(text: str) -> list[str]:
    """Lines of fenced code blocks, with shell line continuations joined."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def _table(name: str, header_start: str) -> list[list[str]]:
    """The cells of each body row of the Markdown table whose header row starts with ``header_start``."""
    lines = _doc(name).splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith(header_start)]
    assert len(starts) == 1, f"{name}: expected one table whose header starts {header_start!r}"
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    assert rows, f"{name}: the table {header_start!r} has no rows"
    return rows


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# ---- reading the code ----------------------------------------------------------------------------


@cache
def _source_text() -> str:
    this_file = Path(__file__).resolve()
    files = {path for pattern in SOURCE_GLOBS for path in ROOT.glob(pattern) if path.is_file()}
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(files)
        if path.resolve() != this_file and "__pycache__" not in path.parts
    )


@cache
def _tree(relative: str) -> ast.Module:
    return ast.parse((ROOT / relative).read_text(encoding="utf-8"))


_DURATION_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def _constant(relative: str, name: str) -> float:
    """A module-level number of a source file, or a ``Duration.<unit>(n)`` in seconds, read without
    importing the module (infra modules would start the CDK's JavaScript runtime)."""
    for node in _tree(relative).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id == name):
            continue
        value = node.value
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name)
            and value.func.value.id == "Duration"
        ):
            return float(ast.literal_eval(value.args[0])) * _DURATION_SECONDS[value.func.attr]
        number = ast.literal_eval(value)
        assert isinstance(number, int | float), f"{relative}: {name} is not a number"
        return float(number)
    raise AssertionError(f"{relative} has no module-level {name} = <number or Duration>")


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def _string_arg(call: ast.Call, index: int) -> str | None:
    if len(call.args) > index and isinstance(call.args[index], ast.Constant):
        value = call.args[index].value  # type: ignore[attr-defined]
        return value if isinstance(value, str) else None
    return None


def _infra_classes() -> dict[str, ast.ClassDef]:
    classes: dict[str, ast.ClassDef] = {}
    for path in sorted((ROOT / "infra").glob("*.py")):
        for node in _tree(str(path.relative_to(ROOT))).body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = node
    return classes


@cache
def _alarm_logical_ids() -> frozenset[str]:
    """Each alarm's construct path joined as CloudFormation's logical id begins with it (before CDK's
    hash): "Observability" + "Api5xxRate". Built from infra's source: constructs made with ``self`` as
    their scope, from the stack down."""
    classes = _infra_classes()
    children: dict[str, list[tuple[str, str]]] = {name: [] for name in classes}
    alarms: dict[str, list[str]] = {name: [] for name in classes}
    every_alarm = 0
    for name, node in classes.items():
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            construct_id = _string_arg(call, 1)
            called = _called_name(call)
            if construct_id is None or called is None:
                continue
            if called in ALARM_FACTORIES:
                every_alarm += 1
            scoped_to_self = isinstance(call.args[0], ast.Name) and call.args[0].id == "self"
            if called in ALARM_FACTORIES and scoped_to_self:
                alarms[name].append(construct_id)
            elif called in classes and scoped_to_self:
                children[name].append((called, construct_id))

    def walk(name: str, prefix: str) -> Iterator[str]:
        yield from (prefix + alarm for alarm in alarms[name])
        for child, construct_id in children[name]:
            yield from walk(child, prefix + construct_id)

    found = list(walk("LoanScoringStack", ""))
    assert len(found) == every_alarm, (
        f"infra creates {every_alarm} alarms but only {len(found)} could be placed under the stack "
        f"({found}): an alarm is made outside a construct class or with another scope than self"
    )
    return frozenset(found)


# ---- settings: cdk.json context --------------------------------------------------------------------

SETTINGS_HEADER = "| key | default | allowed |"
INTEGER_RANGE = re.compile(r"^`(-?\d+)` to `(-?\d+)`$")
CHOICES = re.compile(r"^`[^`]+`(?:(?:, | or )`[^`]+`)*$")


def _settings() -> dict[str, list[str]]:
    return {_ticked(row[0])[0]: row for row in _table("docs/deploy.md", SETTINGS_HEADER)}


def test_given_the_settings_table_then_it_lists_every_context_key_and_no_other() -> None:
    documented = set(_settings())
    assert documented - set(CONTEXT_KEYS) == set(), "docs/deploy.md lists keys infra/config.py does not read"
    assert set(CONTEXT_KEYS) - documented == set(), "infra/config.py reads keys docs/deploy.md does not list"


@pytest.mark.parametrize("key", CONTEXT_KEYS)
def test_given_a_context_key_then_its_documented_default_is_cdk_json_and_the_code_default(key: str) -> None:
    committed = json.loads(_doc("cdk.json"))["context"]
    default_cell = _settings()[key][1]
    documented = json.loads(default_cell.strip("`"))
    assert documented == committed[key], f"{key}: docs/deploy.md says {default_cell}, cdk.json has it"
    assert config_from_context({key: documented}) == config_from_context({}), (
        f"{key}: the documented default {default_cell} is not infra/config.py's default"
    )


def test_given_the_documented_allowed_values_then_config_accepts_exactly_those() -> None:
    checked = 0
    for key, row in _settings().items():
        allowed = row[2]
        bounds = INTEGER_RANGE.match(allowed)
        if bounds:
            low, high = int(bounds[1]), int(bounds[2])
            for value in (low, high):
                config_from_context({key: value})
            for value in (low - 1, high + 1):
                with pytest.raises(ConfigError, match=key):
                    config_from_context({key: value})
            checked += 1
        elif CHOICES.match(allowed) and "<" not in allowed:
            for choice in _ticked(allowed):
                config_from_context({key: choice})
            with pytest.raises(ConfigError, match=key):
                config_from_context({key: "not-one-of-the-documented-values"})
            checked += 1
    # Ranges and choices are most of the table: a reformatted table must not pass by checking nothing.
    assert checked >= 15, f"only {checked} rows of the settings table have a range or a list of values"


def _context_assignments() -> list[tuple[str, str, str]]:
    """(doc, key, value) of every ``-c key=value`` and every code-font ``someKey=value`` in the docs."""
    found = []
    for name in DOCS:
        text = _doc(name)
        for key, value in re.findall(r"-c\s+([A-Za-z]+)=([^\s`]*)", text):
            found.append((name, key, value))
        for span in _code_spans(text):
            match = re.fullmatch(r"([a-z]+[A-Z][A-Za-z]*)=(\S*)", span)
            if match:
                found.append((name, match[1], match[2]))
    return found


def test_given_a_context_value_in_the_docs_then_the_key_exists_and_the_value_is_accepted() -> None:
    assignments = _context_assignments()
    assert len(assignments) >= 10
    for name, key, value in assignments:
        if key == "key":  # the generic form, "-c key=value"
            continue
        assert key in CONTEXT_KEYS, f"{name}: -c {key}=... is not a context key of infra/config.py"
        if re.search(r"<|\.\.\.|…", value) or re.fullmatch(r"[A-Z]", value):  # a placeholder
            continue
        config_from_context({key: "" if value == '""' else value})


# ---- commands ----------------------------------------------------------------------------------------


def test_given_a_make_target_in_the_docs_then_the_makefile_has_it() -> None:
    targets = set(re.findall(r"^([A-Za-z][\w-]*):(?!=)", _doc("Makefile"), flags=re.MULTILINE))
    named = []
    for name in DOCS:
        text = _doc(name)
        lines = [*_code_spans(text), *_fenced_lines(text)]
        named += [(name, target) for line in lines for target in re.findall(r"^make ([a-z][\w-]*)", line)]
    assert len(named) >= 5
    missing = [(name, target) for name, target in named if target not in targets]
    assert missing == [], f"make targets the docs name but the Makefile lacks: {missing}"


def _commands() -> dict[tuple[str, str | None], set[str]]:
    """(module, subcommand or None) -> the flags the docs give it, for every ``python -m`` in the docs."""
    commands: dict[tuple[str, str | None], set[str]] = {}
    for name in DOCS:
        text = _doc(name)
        for line in [*_code_spans(text), *_fenced_lines(text)]:
            for module, rest in re.findall(r"python -m\s+([A-Za-z_][\w.]*)([^#]*)", line):
                words = rest.split()
                first = words[0] if words else ""
                subcommands = _subcommands(module)
                sub = first if first in subcommands else None
                if subcommands and first and not first.startswith(("-", "[", "<", "…")):
                    assert sub is not None, f"{name}: python -m {module} {first}: no such subcommand"
                flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest))
                commands.setdefault((module, sub), set()).update(flags)
    return commands


@cache
def _help(module: str, sub: str | None) -> str:
    """What ``python -m <module> [sub] --help`` prints, run in this process (runpy, as -m does)."""
    out = io.StringIO()
    argv = [module, *([sub] if sub else []), "--help"]
    saved = sys.argv
    sys.argv = argv
    try:
        with warnings.catch_warnings(), redirect_stdout(out):
            warnings.simplefilter("ignore", RuntimeWarning)  # a __main__ module run a second time
            with pytest.raises(SystemExit) as exited:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
    assert exited.value.code in (0, None), f"python -m {' '.join(argv)} exited {exited.value.code}"
    return out.getvalue()


@cache
def _subcommands(module: str) -> frozenset[str]:
    usage = _help(module, None).split("\n\n")[0]
    choices = re.search(r"\{([\w,-]+)\}", usage)
    return frozenset(choices[1].split(",")) if choices else frozenset()


def test_given_a_python_m_command_in_the_docs_then_it_runs_and_has_every_flag_they_give() -> None:
    commands = _commands()
    assert len(commands) >= 8
    problems = []
    for (module, sub), flags in sorted(commands.items(), key=str):
        shown = f"python -m {module}{' ' + sub if sub else ''}"
        text = _help(module, sub)
        assert "usage:" in text, f"{shown} --help printed no usage"
        problems += [f"{shown} {flag}" for flag in sorted(flags) if not re.search(rf"{flag}(?![\w-])", text)]
    assert problems == [], f"flags the docs give that the command does not have: {problems}"


# ---- the API's errors ------------------------------------------------------------------------------


def _status_and_code_pairs() -> set[tuple[int, str]]:
    """(status, code) of every error answer the handler builds: ``HTTPStatus.X, "code"`` in a call."""
    pairs = set()
    for call in (n for n in ast.walk(_tree("lambdas/api/app.py")) if isinstance(n, ast.Call)):
        for index, arg in enumerate(call.args[:-1]):
            is_status = (
                isinstance(arg, ast.Attribute)
                and isinstance(arg.value, ast.Name)
                and arg.value.id == "HTTPStatus"
            )
            code = _string_arg(call, index + 1)
            if is_status and code is not None:
                pairs.add((HTTPStatus[arg.attr].value, code))  # type: ignore[attr-defined]
    return pairs


def test_given_the_readme_error_table_then_it_lists_exactly_the_codes_the_api_answers_with() -> None:
    documented: set[tuple[int, str]] = set()
    for row in _table("README.md", "| status | code | when |"):
        statuses = [int(status) for status in re.findall(r"\d{3}", row[0])]
        codes = _ticked(row[1])
        pairs = zip(statuses, codes, strict=True) if len(statuses) > 1 else ((statuses[0], c) for c in codes)
        documented.update(pairs)
    answered = _status_and_code_pairs()
    assert len(answered) >= 8
    assert documented - answered == set(), "README lists error answers the API never gives"
    assert answered - documented == set(), "the API gives error answers README does not list"


def _detail_codes() -> set[str]:
    codes = set()
    for source, function in (
        ("lambdas/api/errors.py", "detail"),
        ("lambdas/scoring/runtime.py", "FieldError"),
    ):
        for call in (n for n in ast.walk(_tree(source)) if isinstance(n, ast.Call)):
            code = _string_arg(call, 1)
            if _called_name(call) == function and code is not None:
                codes.add(code)
    return codes


def test_given_the_readme_validation_details_then_they_are_the_detail_codes_the_api_gives() -> None:
    rows = [row for row in _table("README.md", "| status | code | when |") if "`validation_error`" in row[1]]
    assert len(rows) == 1
    # The cell names the codes, and one request field as an example.
    documented = set(_ticked(rows[0][2])) - {"application_id"}
    given = _detail_codes()
    assert documented - given == set(), "README names detail codes the API never gives"
    assert given - documented == set(), "the API gives detail codes README does not name"


# ---- the stack: outputs and alarms -------------------------------------------------------------------


def test_given_the_outputs_table_then_it_lists_exactly_the_stack_outputs() -> None:
    method = next(
        node
        for node in ast.walk(_tree("infra/stack.py"))
        if isinstance(node, ast.FunctionDef) and node.name == "_outputs"
    )
    defined: set[object] = set()
    for node in ast.walk(method):
        if isinstance(node, ast.Dict):
            defined.update(key.value for key in node.keys if isinstance(key, ast.Constant))
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            defined.add(node.slice.value)
    documented = {name for row in _table("docs/deploy.md", "| Output |") for name in _ticked(row[0])}
    assert len(defined) >= 15
    assert documented == defined


def test_given_the_alarms_table_then_it_names_every_alarm_of_the_stack_by_its_logical_id() -> None:
    documented = [_ticked(row[0])[0] for row in _table("docs/deploy.md", "| alarm (its name contains) |")]
    alarms = _alarm_logical_ids()
    assert len(alarms) >= 10
    assert sorted(documented) == sorted(alarms)


def test_given_the_cost_table_then_its_alarm_count_is_the_stacks() -> None:
    counts = re.findall(
        r"\+ (\d+) alarms \((\d+) × \$0\.10.*?(\d+) with `trainingSchedule=none`", _prose("docs/deploy.md")
    )
    assert len(counts) == 1, "docs/deploy.md's cost table no longer says how many alarms there are"
    alarms = len(_alarm_logical_ids())  # one of them (the schedule's dead letters) only with a schedule
    assert tuple(int(count) for count in counts[0]) == (alarms, alarms, alarms - 1)


# ---- paths and names ---------------------------------------------------------------------------------


def _repo_paths(name: str) -> Iterator[str]:
    text = _doc(name)
    for span in _code_spans(text):
        for word in span.split():
            word = word.strip("(),;:'\"")
            if word.startswith(REPO_ENTRIES) and not re.search(r"[<*…{$]", word):
                yield word
    base = (ROOT / name).parent
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            yield str((base / target).resolve().relative_to(ROOT))


@pytest.mark.parametrize("name", DOCS)
def test_given_a_repository_path_in_a_doc_then_it_exists(name: str) -> None:
    missing = sorted({path for path in _repo_paths(name) if not (ROOT / path).exists()})
    assert missing == [], f"{name} names paths that do not exist: {missing}"


def _code_names(name: str) -> set[str]:
    """Identifiers in code font: snake_case, camelCase and UPPER_CASE words (variables, constants,
    fields, classes, AWS names)."""
    names = set()
    for span in _code_spans(_doc(name)):
        for word in re.findall(r"(?<![$\w])[A-Za-z_][A-Za-z0-9_.]*", span):  # not a $SHELL_VARIABLE
            word = word.strip(".")
            if "_" in word or re.search(r"[a-z][A-Z]", word) or re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", word):
                names.add(word)
    return names


@pytest.mark.parametrize("name", DOCS)
def test_given_a_name_in_code_font_then_the_code_has_it(name: str) -> None:
    source = _source_text()
    known = EXTERNAL_NAMES | _alarm_logical_ids()
    unknown = sorted(
        word
        for word in _code_names(name)
        if word not in known and word not in source and word.rsplit(".", 1)[-1] not in source
    )
    assert unknown == [], (
        f"{name} names {unknown}, which nothing in the code has (renamed? removed?); a name that is "
        "AWS's or another tool's goes into EXTERNAL_NAMES"
    )


# ---- numbers the docs state as facts of the code -------------------------------------------------


def _hours(relative: str, *names: str) -> float:
    return sum(_constant(relative, name) for name in names) / 3600


FACTS: tuple[tuple[str, str, tuple[Callable[[], float], ...]], ...] = (
    (
        "README.md",
        r"`MAX_BATCH_APPLICATIONS`, default ([\d,]+), at most ([\d,]+)",
        (
            lambda: _constant("lambdas/api/settings.py", "DEFAULT_MAX_BATCH_APPLICATIONS"),
            lambda: _constant("lambdas/api/settings.py", "MAX_BATCH_APPLICATIONS_LIMIT"),
        ),
    ),
    (
        "README.md",
        r"at most ([\d,]+) details",
        (lambda: _constant("lambdas/api/errors.py", "MAX_ERROR_DETAILS"),),
    ),
    (
        "docs/deploy.md",
        r"`driftWindowApplications` of them \(the API function's `DRIFT_WINDOW_APPLICATIONS`, which the "
        r"stack sets: default ([\d,]+); 0 turns it off; at least ([\d,]+)",
        (
            lambda: _constant("lambdas/api/settings.py", "DEFAULT_DRIFT_WINDOW_APPLICATIONS"),
            lambda: _constant("lambdas/scoring/drift.py", "MIN_ROWS_FOR_VERDICT"),
        ),
    ),
    (
        "README.md",
        r"ROC AUC no more than ([\d.]+) below and Brier no more than ([\d.]+) above the champion on the same "
        r"holdout, which must hold at least (\d+) positives and (\d+) negatives",
        (
            lambda: _constant("training/registry.py", "DEFAULT_ROC_AUC_TOLERANCE"),
            lambda: _constant("training/registry.py", "DEFAULT_BRIER_TOLERANCE"),
            lambda: _constant("training/registry.py", "DEFAULT_MIN_HOLDOUT_POSITIVES"),
            lambda: _constant("training/registry.py", "DEFAULT_MIN_HOLDOUT_NEGATIVES"),
        ),
    ),
    (
        "docs/deploy.md",
        r"throttle \((\d+) requests/s, burst (\d+)",
        (
            lambda: _constant("infra/serving.py", "THROTTLE_RATE_PER_SECOND"),
            lambda: _constant("infra/serving.py", "THROTTLE_BURST"),
        ),
    ),
    (
        "docs/deploy.md",
        r"The batch Lambda times out at 15 min \((\d+) s, Lambda's maximum.*?visibility timeout is 90 min "
        r"\((\d+) s, ≥ 6×\), and a message that fails (\d+) times",
        (
            lambda: _constant("infra/batch_scoring.py", "BATCH_TIMEOUT"),
            lambda: _constant("infra/batch_scoring.py", "VISIBILITY_TIMEOUT"),
            lambda: _constant("infra/batch_scoring.py", "MAX_RECEIVE_COUNT"),
        ),
    ),
    (
        "docs/deploy.md",
        r"older than (\d+) h \(the state machine's (\d+) h timeout plus (\d+) h",
        (
            # infra/snapshot_sweeper.py: MIN_SNAPSHOT_AGE = STATE_MACHINE_TIMEOUT.plus(AGE_MARGIN)
            lambda: (
                _hours("infra/training_pipeline.py", "STATE_MACHINE_TIMEOUT")
                + _hours("infra/snapshot_sweeper.py", "AGE_MARGIN")
            ),
            lambda: _hours("infra/training_pipeline.py", "STATE_MACHINE_TIMEOUT"),
            lambda: _hours("infra/snapshot_sweeper.py", "AGE_MARGIN"),
        ),
    ),
)


@pytest.mark.parametrize(("name", "pattern", "values"), FACTS, ids=[fact[1][:40] for fact in FACTS])
def test_given_a_number_the_docs_state_then_it_is_the_codes(
    name: str, pattern: str, values: tuple[Callable[[], float], ...]
) -> None:
    matches = re.findall(pattern, _prose(name))
    assert matches, f"{name} no longer has the sentence {pattern!r}: reword the pattern with the doc"
    expected = tuple(value() for value in values)
    for match in matches:
        parts = (match,) if isinstance(match, str) else match
        stated = tuple(float(part.replace(",", "")) for part in parts)
        assert stated == expected, f"{name}: {pattern!r} states {stated}, the code has {expected}"


# ---- versions the docs pin --------------------------------------------------------------------------


def _locked_versions() -> dict[str, str]:
    """Python packages from uv.lock, and the npm devDependencies of package.json (prefixed ``npm:``)."""
    locked = {package["name"]: package["version"] for package in tomllib.loads(_doc("uv.lock"))["package"]}
    npm = json.loads(_doc("package.json"))["devDependencies"]
    return locked | {f"npm:{name}": version for name, version in npm.items()}


VERSIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("docs/deploy.md", r"`aws-cdk` ([\d.]+) in `package.json`", ("npm:aws-cdk",)),
    ("docs/deploy.md", r"the `aws-cdk-lib` ([\d.]+) we use", ("aws-cdk-lib",)),
    (
        "README.md",
        r"scikit-learn ([\d.]+) / skl2onnx ([\d.]+) / onnxruntime ([\d.]+)",
        ("scikit-learn", "skl2onnx", "onnxruntime"),
    ),
)


@pytest.mark.parametrize(("name", "pattern", "packages"), VERSIONS, ids=[v[2][0] for v in VERSIONS])
def test_given_a_version_the_docs_state_then_it_is_the_locked_one(
    name: str, pattern: str, packages: tuple[str, ...]
) -> None:
    match = re.search(pattern, _prose(name))
    assert match, f"{name} no longer has the sentence {pattern!r}: reword the pattern with the doc"
    locked = _locked_versions()
    for package, stated in zip(packages, match.groups(), strict=True):
        # "1.9" states the minor version: any locked 1.9.x agrees with it.
        assert locked[package] == stated or locked[package].startswith(stated + "."), (
            f"{name} says {package} {stated}, the lock has {locked[package]}"
        )
