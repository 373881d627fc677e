"""The local demo and the fresh-machine path (`make demo`, `python -m localapi`, the Makefile, .ci/run).

The demo runs in a subprocess through a small harness that points its outputs at a temporary folder
and, where a test needs it, replaces one step (a wrong API answer, a manifest whose counts do not add
up, a pause while a server runs). Each failure must be one ``demo: error: …`` line with exit code 1,
an interruption must leave no server or worker process behind, and a good run must check its results.
"""

from __future__ import annotations

import ast
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from localapi.background import LOOPBACK, background_server
from tests.conftest import skip_unless_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DATA = REPO_ROOT / "training" / "data" / "credit_risk_dataset.csv.gz"
BUNDLE = REPO_ROOT / "model_artifacts" / "credit_risk"

# The harness: argv[1] is the demo's output folder, the rest goes to the demo. PATCH is replaced.
HARNESS = """
import sys, time
from pathlib import Path
import demo.__main__ as demo
demo.WORK_DIR = Path(sys.argv[1])
PATCH
raise SystemExit(demo.main(sys.argv[2:]))
"""
# Pauses the demo once the section whose title starts with `PAUSE_AT` is printed (its server runs).
PAUSE = """
printed = demo._section
def _section(title):
    printed(title)
    if title.startswith(PAUSE_AT):
        print("PAUSED", flush=True)
        time.sleep(300)
demo._section = _section
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "POWERTOOLS_TRACE_DISABLED": "true"}


def _harness(tmp_path: Path, patch: str) -> Path:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS.replace("PATCH", textwrap.dedent(patch)))
    return script


def _run_demo(tmp_path: Path, patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = _harness(tmp_path, patch)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out"), *args],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _one_error_line(stderr: str) -> str:
    """The demo's failure report: exactly one non-empty stderr line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        yield holder.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# A server that cannot start says why
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [["localapi", "--bundle", str(BUNDLE)], ["moto.server", "-H", LOOPBACK]],
    ids=["local-api", "moto-server"],
)
def test_given_a_taken_port_when_a_background_server_starts_then_the_error_carries_its_reason(
    module: list[str], taken_port: int
) -> None:
    # Given a port another program listens on
    port_flag = "--port" if module[0] == "localapi" else "-p"
    command = [sys.executable, "-m", *module, port_flag, str(taken_port)]
    # When the server is started there, Then the error names the server's own reason (not only its code)
    url = f"http://{LOOPBACK}:{taken_port}/"
    with pytest.raises(RuntimeError) as raised, background_server(command, url, env=_env(), cwd=REPO_ROOT):
        pass
    message = str(raised.value)
    assert "exited with code" in message
    assert "in use" in message, message


def test_given_a_corrupt_bundle_when_the_local_api_starts_then_it_exits_with_one_line(tmp_path: Path) -> None:
    # Given a bundle whose ONNX file does not match its card
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(BUNDLE / "model_card.json", bundle / "model_card.json")
    (bundle / "model.onnx").write_bytes(b"not a model")
    # When the local API is started on it
    completed = subprocess.run(
        [sys.executable, "-m", "localapi", "--port", "0", "--bundle", str(bundle)],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then it exits non-zero with one line naming the problem, not a traceback
    assert completed.returncode == 2
    line = _one_error_line(completed.stderr)
    assert line.startswith("error:")
    assert "does not match its card" in line


# ------------------------------------------------------------------------------------------------
# The shipped data file: missing or corrupt
# ------------------------------------------------------------------------------------------------


def _write_bad_data(kind: str, path: Path) -> None:
    if kind == "truncated":
        path.write_bytes(SHIPPED_DATA.read_bytes()[:4000])
    elif kind == "not-gzip":
        path.write_text("person_age,loan_status\n22,1\n")
    elif kind == "other-table":
        path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 50))


@pytest.mark.parametrize("kind", ["missing", "truncated", "not-gzip", "other-table"])
def test_given_a_missing_or_corrupt_data_file_when_the_demo_runs_then_one_line_names_it(
    tmp_path: Path, kind: str
) -> None:
    # Given the shipped data file missing, cut short, not gzip, or another table
    data = tmp_path / "credit_risk_dataset.csv.gz"
    _write_bad_data(kind, data)
    # When the demo runs (on the committed bundle: the data file is still what the batch file comes from)
    completed = _run_demo(tmp_path, f"demo.SHIPPED_DATA = Path({str(data)!r})", "--skip-training")
    # Then it fails with one line naming the file, before starting any server
    assert completed.returncode == 1, completed.stdout[-2000:] + completed.stderr[-3000:]
    line = _one_error_line(completed.stderr)
    assert line.startswith("demo: error:")
    assert str(data) in line
    assert "Scoring API on" not in completed.stdout


# ------------------------------------------------------------------------------------------------
# The demo checks its results
# ------------------------------------------------------------------------------------------------


def test_given_a_good_run_when_the_demo_ends_then_it_exits_0_with_the_scored_file(tmp_path: Path) -> None:
    completed = _run_demo(tmp_path, "", "--skip-training")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "=== Done" in completed.stdout
    scored = (tmp_path / "out" / "scored.csv").read_text()
    assert scored.startswith('"application_id"')
    assert len(scored.splitlines()) > 100
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["scored.csv"]  # no temporary left


def test_given_the_api_answers_500_when_the_demo_scores_then_it_fails(tmp_path: Path) -> None:
    # Given an API whose score call fails (the local server answers; the demo's client sees a 500)
    patch = """
    real_http = demo._http
    def _http(method, url, body=None, raw=None):
        if url.endswith("/v1/score") and body and "application_id" in body:
            return 500, {"error": {"code": "internal_error", "message": "boom"}}
        return real_http(method, url, body, raw)
    demo._http = _http
    """
    # When the demo runs
    completed = _run_demo(tmp_path, patch, "--skip-training")
    # Then it does not report success: one line, exit code 1
    assert completed.returncode == 1, completed.stdout[-2000:]
    assert "POST /v1/score answered 500" in _one_error_line(completed.stderr)
    assert "=== Done" not in completed.stdout


def test_given_a_manifest_whose_counts_do_not_add_up_when_the_demo_checks_it_then_it_fails(
    tmp_path: Path,
) -> None:
    # Given a batch run whose manifest loses a row (rows in != scored + rejected)
    patch = """
    import lambdas.batch.local as local
    real_drain = local.drain_queue_once
    def drain_queue_once(*args, **kwargs):
        result = real_drain(*args, **kwargs)
        for manifest in result.manifests:
            manifest["counts"]["rows_scored"] -= 1
        return result
    local.drain_queue_once = drain_queue_once
    """
    # When the demo runs
    completed = _run_demo(tmp_path, patch, "--skip-training")
    # Then it fails naming the broken invariant, and writes no output file
    assert completed.returncode == 1, completed.stdout[-2000:]
    assert "rows in must equal rows scored + rejected" in _one_error_line(completed.stderr)
    assert not (tmp_path / "out" / "scored.csv").exists()


# ------------------------------------------------------------------------------------------------
# Interrupted: Ctrl-C (SIGINT to the terminal's process group) or SIGTERM (kill, a CI timeout)
# ------------------------------------------------------------------------------------------------


def _start_paused(tmp_path: Path, patch: str, *args: str) -> subprocess.Popen[str]:
    script = _harness(tmp_path, patch)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out"), *args],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )


def _wait_for_line(process: subprocess.Popen[str], wanted: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(
        f"the demo ended before {wanted}: {process.wait()} {process.stderr and process.stderr.read()}"
    )


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """After a failed step: stop the demo and whatever it started, if still running."""
    if process.poll() is None:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def _interrupt_and_collect(
    process: subprocess.Popen[str], children: list[psutil.Process], how: str
) -> tuple[int, str, list[str]]:
    """Send the signal, wait for the demo to end, and return its code, its stderr and the command lines
    of its children still running then (killed afterwards: the test started them)."""
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=120)
    _, alive = psutil.wait_procs(children, timeout=15)
    left = []
    for child in alive:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(child.cmdline()))
                child.kill()
        except psutil.NoSuchProcess:
            continue
    # Read stderr only now: a child left running would hold the pipe open
    assert process.stderr is not None
    return code, process.stderr.read(), left


@pytest.mark.parametrize(
    ("how", "section"), [("ctrl-c", "Scoring API"), ("sigterm", "Scoring API"), ("sigterm", "Batch")]
)
def test_given_a_running_server_when_the_demo_is_interrupted_then_nothing_is_left_running(
    tmp_path: Path, how: str, section: str
) -> None:
    # Given the demo paused while its API server (or its S3/SQS emulator) runs
    process = _start_paused(tmp_path, PAUSE.replace("PAUSE_AT", repr(section)), "--skip-training")
    try:
        _wait_for_line(process, "PAUSED")
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the paused demo runs no server"
        # When it is interrupted
        code, stderr, alive = _interrupt_and_collect(process, children, how)
    finally:
        _kill_tree(process)
    # Then no server outlives it, it exits non-zero and says so in one line
    assert not alive, alive
    assert code == 130
    assert "interrupted" in _one_error_line(stderr)


# A training step that runs joblib's process workers (as the real training does), paused in them.
TRAINING_IN_WORKERS = """
import training.pipeline
from joblib import Parallel, delayed
def _work(marker):
    Path(marker).touch()
    time.sleep(300)
def train_bundle(dataset, out_dir, config=None):
    print("TRAINING", flush=True)
    Parallel(n_jobs=2)(delayed(_work)(f"{sys.argv[1]}-worker-{n}") for n in range(2))
training.pipeline.train_bundle = train_bundle
import training.datasets.catalog
training.datasets.catalog.load_dataset = lambda name: None
"""


def test_given_training_in_worker_processes_when_the_demo_gets_sigterm_then_the_workers_stop(
    tmp_path: Path,
) -> None:
    # Given the demo training, its joblib workers busy
    process = _start_paused(tmp_path, TRAINING_IN_WORKERS)
    try:
        _wait_for_line(process, "TRAINING")
        markers = [Path(f"{tmp_path / 'out'}-worker-{n}") for n in range(2)]
        deadline = time.monotonic() + 120
        while not all(marker.exists() for marker in markers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(marker.exists() for marker in markers), "the workers did not start"
        children = psutil.Process(process.pid).children(recursive=True)
        # When it gets SIGTERM
        code, stderr, alive = _interrupt_and_collect(process, children, "sigterm")
    finally:
        _kill_tree(process)
    # Then no worker keeps running after it, and it says it was interrupted
    assert not alive, alive
    assert code == 130
    assert "interrupted" in stderr


# ------------------------------------------------------------------------------------------------
# Makefile and .ci/run (run for real in temporary copies, with stand-ins for make's and MariaDB's parts)
# ------------------------------------------------------------------------------------------------


def test_given_a_lock_that_no_longer_matches_when_make_runs_then_it_fails_and_leaves_the_lock(
    tmp_path: Path,
) -> None:
    # Given a copy of the project files whose pyproject.toml gained a dependency the lock lacks
    for name in ("Makefile", "pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("dependencies = []", 'dependencies = ["six>=1"]', 1))
    lock = (tmp_path / "uv.lock").read_bytes()
    # When a target runs (lint: set-up free, so only its `uv run` touches the lock) and set-up runs
    ignored = {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_FROZEN", "UV_LOCKED", "UV_NO_SYNC"}
    env = {key: value for key, value in os.environ.items() if key not in ignored}
    # (lint's own outcome on a tree without sources does not matter here; what it does to the lock does)
    subprocess.run(["make", "lint"], cwd=tmp_path, env=env, capture_output=True, timeout=600, check=False)
    setup = subprocess.run(
        ["make", "setup"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    # Then neither rewrites the committed lock, and set-up fails naming it
    assert (tmp_path / "uv.lock").read_bytes() == lock
    assert setup.returncode != 0
    assert "uv.lock" in setup.stderr + setup.stdout


def _ci_copy(tmp_path: Path, *, mariadb_up: bool, make_fails: bool = False) -> tuple[Path, dict[str, str]]:
    """.ci/run in a temporary checkout whose `make test` records CI, with stand-ins for mysqladmin,
    start-stop-daemon and sleep (so no real MariaDB is started or waited for)."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO_ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    recipe = "exit 3" if make_fails else 'echo "CI=$$CI" > ran'
    (tmp_path / "Makefile").write_text(f"test:\n\t@{recipe}\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, code in (("mysqladmin", 0 if mariadb_up else 1), ("start-stop-daemon", 0), ("sleep", 0)):
        stub = stubs / name
        stub.write_text(f"#!/bin/sh\nexit {code}\n")
        stub.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PATH"] = f"{stubs}{os.pathsep}{env['PATH']}"
    return tmp_path / ".ci" / "run", env


def test_given_no_ci_variable_when_ci_runs_then_the_tests_run_with_ci_true(tmp_path: Path) -> None:
    # Given a CI runner that does not set CI (then the MariaDB and CDK CLI tests would skip, not fail)
    script, env = _ci_copy(tmp_path, mariadb_up=True)
    # When .ci/run runs
    completed = subprocess.run(
        [str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    # Then `make test` ran with CI=true
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "ran").read_text().strip() == "CI=true"


def test_given_mariadb_not_answering_when_ci_runs_then_it_fails_before_the_tests(tmp_path: Path) -> None:
    script, env = _ci_copy(tmp_path, mariadb_up=False)
    completed = subprocess.run(
        [str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode != 0
    assert "MariaDB" in completed.stderr
    assert not (tmp_path / "ran").exists()


def test_given_a_failing_make_test_when_ci_runs_then_it_fails(tmp_path: Path) -> None:
    script, env = _ci_copy(tmp_path, mariadb_up=True, make_fails=True)
    completed = subprocess.run(
        [str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode != 0


# ---- CI=true runs every test: no skip that CI would pass ---------------------------------------------


def test_given_a_missing_prerequisite_then_the_test_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no bundle here"):
        skip_unless_ci("no bundle here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true must run every test: no bundle here"):
        skip_unless_ci("no bundle here")


def _skips_ci_would_pass(source: str) -> list[str]:
    """The skips in ``source`` that would pass under CI=true: a skip or importorskip whose function does
    not fail under CI, a skip or skipif mark, and an xfail that is not strict (a fixed bug would XPASS)."""
    tree = ast.parse(source)
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for function in functions:
        calls = {ast.unparse(n.func) for n in ast.walk(function) if isinstance(n, ast.Call)}
        if calls & {"pytest.skip", "pytest.importorskip"} and "pytest.fail" not in calls:
            found.append(f"{function.name} (line {function.lineno}): a skip without a CI failure")
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call | ast.Attribute) or id(node) in called:
            continue  # a mark is looked at once: as the call, or as the bare decorator
        name = ast.unparse(node.func if isinstance(node, ast.Call) else node)
        if name in ("pytest.mark.skip", "pytest.mark.skipif", "pytest.xfail"):
            found.append(f"line {node.lineno}: {name}")
        strict = isinstance(node, ast.Call) and any(
            k.arg == "strict" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if name == "pytest.mark.xfail" and not strict:
            found.append(f"line {node.lineno}: an xfail that is not strict=True")
    return found


def test_given_the_suite_then_every_skip_fails_under_ci_and_every_xfail_is_strict() -> None:
    tests = REPO_ROOT / "tests"
    found = {
        str(path.relative_to(tests)): problems
        for path in sorted(tests.rglob("*.py"))
        if (problems := _skips_ci_would_pass(path.read_text()))
    }
    assert found == {}


@pytest.mark.parametrize(
    "source",
    [
        "def test_x():\n    pytest.skip('no data')\n",
        "def test_x():\n    pytest.importorskip('sklearn')\n",
        "@pytest.mark.skipif(True, reason='r')\ndef test_x():\n    pass\n",
        "@pytest.mark.xfail(reason='r')\ndef test_x():\n    pass\n",
        "@pytest.mark.xfail(strict=False, reason='r')\ndef test_x():\n    pass\n",
    ],
)
def test_given_a_skip_ci_would_pass_then_the_suite_check_finds_it(source: str) -> None:
    assert len(_skips_ci_would_pass(source)) == 1
    guarded = "def test_x():\n    if CI:\n        pytest.fail('r')\n    pytest.skip('r')\n"
    strict = "@pytest.mark.xfail(strict=True, reason='r')\ndef test_x():\n    pass\n"
    assert _skips_ci_would_pass(guarded) == _skips_ci_would_pass(strict) == []
