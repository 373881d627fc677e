"""Docker-free Lambda deployment packages: locked wheels for Lambda's Linux + our code + the model bundle.

Public API (used by the CDK assets and by other engineers' isolated-import tests)::

    from infra.lambda_package import build_lambda_package
    # function: "api", "batch", "rollout_check" or "snapshot_sweeper"; arch="arm64" for Graviton
    report = build_lambda_package("api", Path("build/api-pkg"))
    print(report.unzipped_bytes, report.zipped_bytes)

CLI::

    python -m infra.lambda_package --function FUNCTION --out DIR [--arch x86_64|arm64]

How a package is built:
1. ``uv export --frozen`` turns uv.lock's ``lambda`` group (plus ``lambda-batch`` for the batch function)
   into pinned requirements with uv.lock's sha256 hashes, so the Lambda gets exactly the locked versions.
2. The wheels are installed for Lambda's platform (manylinux_2_28, CPython 3.12, binary wheels only)
   into a folder in hash-checking mode: a wheel whose bytes are not the locked ones (a tampered mirror
   or find-links folder, a corrupted cache) fails the build; nothing is compiled, nothing is resolved
   (``--no-deps``: the lock is the complete resolution) and no Docker is needed.
3. ``lambdas/`` (without tests and caches) and the model bundle folder are copied in at the paths the
   handlers expect, and what Lambda never needs is pruned (see ``_PRUNE_*``). A function that serves
   no model (``rollout_check``, ``snapshot_sweeper``) gets ``lambdas/__init__.py`` and its own package
   only, and no wheels.
4. Everything is compiled to CPython 3.12 bytecode (unchecked-hash ``.pyc``, source paths recorded as
   under ``/var/task``): Lambda's code folder is read-only, so without them every cold start would
   compile every imported module again.
The same inputs give the same bytes on any machine (no timestamps or build paths inside, every mode
0644 or 0755 whatever the umask), so CDK's output hash, and with it the deployed function, changes only
when an input does, and the zip CDK makes of the folder (which keeps each file's mode) is the same too.
The result is cached under ``build/lambda-packages/`` by a hash of every input, so repeated
``cdk synth`` runs copy a finished folder instead of reinstalling.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

LambdaFunction = Literal["api", "batch", "rollout_check", "snapshot_sweeper"]
Architecture = Literal["x86_64", "arm64"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_BUNDLE_DIR = "model_artifacts/credit_risk"
CACHE_ROOT_RELATIVE = Path("build") / "lambda-packages"
# Lambda's hard limit on the unzipped size of a function (code + layers).
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
PYTHON_VERSION = "3.12"

_DEPENDENCY_GROUPS: dict[str, tuple[str, ...]] = {
    "api": ("lambda",),
    "batch": ("lambda", "lambda-batch"),
    # CodeDeploy's pre-traffic check: the standard library and the runtime's boto3 only.
    "rollout_check": (),
    # The daily sweeper of leftover retraining snapshots: likewise.
    "snapshot_sweeper": (),
}
# Functions that serve a model: they get all of lambdas/ and the model bundle. Any other function gets
# lambdas/__init__.py and its own package only (no model, no scoring code it would never import).
_SERVES_MODEL = frozenset({"api", "batch"})
# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34). manylinux2014 is not enough: numpy 2.5
# publishes only manylinux_2_28 wheels, so we target 2_28 (which AL2023 satisfies).
_UV_PLATFORMS: dict[str, str] = {"x86_64": "x86_64-manylinux_2_28", "arm64": "aarch64-manylinux_2_28"}
# The Lambda runtime already ships boto3/botocore; bundling them again costs ~30 MB. Left out by
# ``uv export --no-emit-package``, which drops a package with its hashes (filtering the exported lines
# would leave its ``--hash`` continuation lines behind).
_PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer")
# Folder names never needed at run time (test suites, the wheels' own byte-code caches, C headers);
# the package's bytecode is compiled afresh by _compile_bytecode.
_PRUNE_DIR_NAMES = frozenset({"__pycache__", "tests", "include"})
_PRUNE_SUFFIXES = (".pyc", ".pyo", ".pxd", ".pyx", ".pxi", ".h", ".hpp")
# Optional parts of big wheels that the handlers never import; pyarrow and onnxruntime import
# without them (checked by tests/infra/test_lambda_package.py importing the built package).
_PRUNE_GLOBS = (
    "onnxruntime/transformers",
    "onnxruntime/tools",
    "onnxruntime/quantization",
    "onnxruntime/backend",
    "pyarrow/libarrow_flight*",
    "pyarrow/_flight*",
    "pyarrow/libarrow_python_flight*",
    "pyarrow/libarrow_s3*",
    "pyarrow/_s3fs*",
    "pyarrow/_pyarrow_cpp_tests*",
    # The installer's own files: console scripts (their '#!' names the build machine's interpreter)
    # and uv's lock file for the target folder.
    "bin",
    ".lock",
)
_CODE_DIR = "lambdas"
# Where Lambda unpacks the code: the path the bytecode records for its sources (tracebacks, and no
# path of the build machine in the package).
_LAMBDA_TASK_ROOT = "/var/task"


@dataclass(frozen=True)
class PackageReport:
    """What was built and how big it is (Lambda limits: 250 MB unzipped, 50 MB zipped direct upload)."""

    function: str
    arch: str
    out_dir: Path
    unzipped_bytes: int
    zipped_bytes: int
    input_hash: str
    from_cache: bool

    @property
    def fits_lambda_limit(self) -> bool:
        return self.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT_BYTES

    def summary(self) -> str:
        mib = 1024 * 1024
        return (
            f"{self.function} ({self.arch}) -> {self.out_dir}: "
            f"unzipped {self.unzipped_bytes / mib:.1f} MiB (limit 250), "
            f"zipped {self.zipped_bytes / mib:.1f} MiB"
            f"{' [cached]' if self.from_cache else ''}"
        )


class PackageBuildError(RuntimeError):
    """The package could not be built (bad argument, uv/pip failure, or over Lambda's size limit)."""


def build_lambda_package(
    function: LambdaFunction,
    out_dir: Path,
    arch: str = "x86_64",
    *,
    model_bundle_dir: str = DEFAULT_MODEL_BUNDLE_DIR,
    repo_root: Path = REPO_ROOT,
) -> PackageReport:
    """Build the code folder of one Lambda into ``out_dir`` (created or replaced) and report its sizes.

    ``model_bundle_dir`` is relative to ``repo_root`` and lands at the same relative path in the package
    (the handlers' ``MODEL_BUNDLE_DIR``); a missing bundle folder is skipped so synthesis works before a
    model has been trained.
    """
    if function not in _DEPENDENCY_GROUPS:
        raise PackageBuildError(f"function must be one of {sorted(_DEPENDENCY_GROUPS)}, got {function!r}")
    if arch not in _UV_PLATFORMS:
        raise PackageBuildError(f"arch must be one of {sorted(_UV_PLATFORMS)}, got {arch!r}")
    if Path(model_bundle_dir).is_absolute() or ".." in Path(model_bundle_dir).parts:
        raise PackageBuildError(
            f"model_bundle_dir must be relative inside the repository, got {model_bundle_dir!r}"
        )

    requirements = _export_requirements(function, repo_root)
    sources = _sources(function, repo_root, model_bundle_dir)
    input_hash = _hash_inputs(function, arch, requirements, repo_root, model_bundle_dir, sources)
    cached = repo_root / CACHE_ROOT_RELATIVE / f"{function}-{arch}-{input_hash[:16]}"
    report_file = cached / ".package-report.json"

    # One builder per cache entry at a time: parallel test workers and synths share the cache, and
    # a second builder replacing the folder would pull it from under a first one still reading it.
    with exclusive_lock(cached.parent / f"{cached.name}.lock"):
        from_cache = report_file.is_file()
        if not from_cache:
            _build_into_cache(cached, requirements, arch, sources)
            sizes = {"unzipped_bytes": _unzipped_size(cached), "zipped_bytes": _zipped_size(cached)}
            report_file.write_text(json.dumps(sizes))
        sizes = json.loads(report_file.read_text())
        _replace_dir(out_dir)
        shutil.copytree(cached, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(report_file.name))
    report = PackageReport(
        function=function,
        arch=arch,
        out_dir=out_dir,
        unzipped_bytes=int(sizes["unzipped_bytes"]),
        zipped_bytes=int(sizes["zipped_bytes"]),
        input_hash=input_hash,
        from_cache=from_cache,
    )
    if not report.fits_lambda_limit:
        raise PackageBuildError(f"{report.summary()} exceeds Lambda's 250 MB unzipped limit")
    return report


def _export_requirements(function: str, repo_root: Path) -> list[str]:
    """The function's locked requirements, one line each with uv.lock's hashes
    (``name==version [; marker] --hash=sha256:...``), minus what the runtime provides."""
    if not _DEPENDENCY_GROUPS[function]:
        return []
    uv = shutil.which("uv")
    if uv is None:
        raise PackageBuildError("uv is required to export the locked requirements (pip install uv)")
    command = [uv, "export", "--frozen", "--no-default-groups"]
    for group in _DEPENDENCY_GROUPS[function]:
        command += ["--group", group]
    for package in _PROVIDED_BY_RUNTIME:
        command += ["--no-emit-package", package]
    command += ["--no-emit-project", "--no-header", "--no-annotate"]
    output = _run(command, cwd=repo_root)
    # One line per requirement (its hashes are continuation lines): the lines are the cache key too.
    joined = output.replace("\\\n", " ")
    return [
        " ".join(line.split()) for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def _sources(function: str, repo_root: Path, model_bundle_dir: str) -> list[tuple[Path, Path]]:
    """What the package holds besides wheels: (source file or folder, its path inside the package)."""
    if function in _SERVES_MODEL:
        return [
            (repo_root / _CODE_DIR, Path(_CODE_DIR)),
            (repo_root / model_bundle_dir, Path(model_bundle_dir)),
        ]
    package_init = Path(_CODE_DIR) / "__init__.py"
    own_code = Path(_CODE_DIR) / function
    return [(repo_root / package_init, package_init), (repo_root / own_code, own_code)]


def _hash_inputs(
    function: str,
    arch: str,
    requirements: list[str],
    repo_root: Path,
    model_bundle_dir: str,
    sources: list[tuple[Path, Path]],
) -> str:
    digest = hashlib.sha256()
    # The builder itself is an input: changing the prune rules must invalidate the cache.
    for part in (function, arch, PYTHON_VERSION, _UV_PLATFORMS[arch], model_bundle_dir, *requirements):
        digest.update(part.encode() + b"\0")
    digest.update(Path(__file__).read_bytes())
    for root, _ in sources:
        for file in _files_to_copy(root):
            digest.update(str(file.relative_to(repo_root)).encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _files_to_copy(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        return
    for file in sorted(root.rglob("*")):
        relative_parts = file.relative_to(root).parts
        if file.is_file() and not _is_pruned(relative_parts):
            yield file


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    _ensure_dir(lock_file.parent)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_pruned(relative_parts: tuple[str, ...]) -> bool:
    in_pruned_dir = any(part in _PRUNE_DIR_NAMES for part in relative_parts[:-1])
    # Dotfiles (.env, .DS_Store, editor swap files, tool caches) are never code: they must neither
    # ship nor change the hash.
    hidden = any(part.startswith(".") for part in relative_parts)
    return hidden or in_pruned_dir or relative_parts[-1].endswith(_PRUNE_SUFFIXES)


def _build_into_cache(
    cached: Path, requirements: list[str], arch: str, sources: list[tuple[Path, Path]]
) -> None:
    staging = Path(tempfile.mkdtemp(prefix=cached.name + "-", dir=_ensure_dir(cached.parent)))
    try:
        if requirements:
            _install_wheels(requirements, arch, staging)
        _prune(staging)
        for root, relative in sources:
            for file in _files_to_copy(root):
                target = staging / relative if file == root else staging / relative / file.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)
        _compile_bytecode(staging)
        _normalise_modes(staging)
        _replace_dir(cached)
        cached.rmdir()
        staging.rename(cached)  # atomic: a half-built folder is never mistaken for a cached one
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_wheels(requirements: list[str], arch: str, target: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
        requirements_file = handle.name
    try:
        # uv is on PATH: _export_requirements needs it first. --no-deps: the exported list is already
        # the complete locked resolution. --require-hashes: every wheel, whichever index, find-links
        # folder or cache it comes from, must have one of uv.lock's hashes for its version.
        # --link-mode copy: the package's files are not hard links into uv's cache, so _normalise_modes
        # does not change the cache and a later change in the cache does not change a built package.
        command = ["uv", "pip", "install", "--no-deps", "--require-hashes", "--only-binary", ":all:"]
        command += ["--link-mode", "copy"]
        command += ["--python-platform", _UV_PLATFORMS[arch], "--python-version", PYTHON_VERSION]
        try:
            _run([*command, "--target", str(target), "-r", requirements_file], cwd=target)
        except PackageBuildError as error:
            raise PackageBuildError(
                f"installing uv.lock's wheels for {_UV_PLATFORMS[arch]} (CPython {PYTHON_VERSION}) failed: "
                "a package without a wheel for that platform, or a wheel whose bytes are not the ones "
                f"uv.lock hashed, is refused rather than built or trusted\n{error}"
            ) from error
    finally:
        os.unlink(requirements_file)


def _compile_bytecode(root: Path) -> None:
    """Byte-compile the package with CPython 3.12, the runtime's version (the .pyc magic number is
    per minor version). Unchecked-hash .pyc files are used without comparing source timestamps, so
    the mtimes a zip gives the files do not matter; a build without CPython 3.12 fails by name.
    ``-d`` records the sources under Lambda's /var/task instead of the (random) staging folder, which
    would make every build's bytes differ and leak the build machine's paths."""
    if sys.version_info[:2] == (3, 12):
        python = sys.executable
    else:
        found = shutil.which("python3.12")
        if found is None:
            raise PackageBuildError(
                "CPython 3.12 (Lambda's runtime) is needed to precompile the package's bytecode: "
                "run the build with Python 3.12 or put python3.12 on PATH"
            )
        python = found
    command = [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    _run([*command, "-d", _LAMBDA_TASK_ROOT, str(root)], cwd=root)


def _normalise_modes(root: Path) -> None:
    """Folders and executables 0755, other files 0644, whatever the umask, checkout or cache made them.
    Lambda runs the code as a user that does not own the unzipped files and keeps the zip's modes: a
    file left 0600 (or a folder 0700) by a strict umask fails the import with 'Permission denied'. And
    CDK's zip records each mode, so a 0664 from a umask-002 machine would make other bytes of the
    same asset (its hash ignores modes): whichever machine uploads first would decide what deploys."""
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        wanted = 0o755 if path.is_dir() or mode & 0o111 else 0o644
        if wanted != mode:
            path.chmod(wanted)


def _prune(root: Path) -> None:
    for pattern in _PRUNE_GLOBS:
        for match in root.glob(pattern):
            _remove(match)
    for path in sorted(root.rglob("*"), reverse=True):  # deepest first
        pruned_dir = path.is_dir() and path.name in _PRUNE_DIR_NAMES
        if pruned_dir or (path.is_file() and path.name.endswith(_PRUNE_SUFFIXES)):
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _replace_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unzipped_size(root: Path) -> int:
    return sum(file.stat().st_size for file in root.rglob("*") if file.is_file())


def _zipped_size(root: Path) -> int:
    """Size of the zip Lambda would receive (deflate, the same as the CDK asset zip)."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "package.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zipped:
            for file in sorted(root.rglob("*")):
                if file.is_file() and file.name != ".package-report.json":
                    zipped.write(file, file.relative_to(root))
        return archive.stat().st_size


def _run(command: list[str], cwd: Path) -> str:
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if completed.returncode != 0:
        raise PackageBuildError(
            f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}"
        )
    return completed.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.lambda_package", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--function", required=True, choices=list(get_args(LambdaFunction)))
    parser.add_argument("--out", required=True, type=Path, help="folder to (re)create with the package")
    parser.add_argument("--arch", default="x86_64", choices=list(get_args(Architecture)))
    parser.add_argument("--model-bundle-dir", default=DEFAULT_MODEL_BUNDLE_DIR)
    args = parser.parse_args(argv)
    try:
        report = build_lambda_package(
            args.function, args.out, args.arch, model_bundle_dir=args.model_bundle_dir
        )
    except PackageBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    print(json.dumps({**asdict(report), "out_dir": str(report.out_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
