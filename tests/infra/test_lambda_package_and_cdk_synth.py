"""The real, Docker-free path: build both Lambda packages and run `npx cdk synth` offline (CI runs these)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.lambda_package import LAMBDA_UNZIPPED_LIMIT_BYTES, PackageBuildError, build_lambda_package

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_CLI = REPO_ROOT / "node_modules" / ".bin" / "cdk"
OFFLINE_ENV = {
    "CDK_DISABLE_VERSION_CHECK": "true",
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
}


def test_given_a_bad_function_or_arch_when_building_then_the_error_names_it(tmp_path: Path) -> None:
    with pytest.raises(PackageBuildError, match="'scoring'"):
        build_lambda_package("scoring", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(PackageBuildError, match="'ppc64'"):
        build_lambda_package("api", tmp_path, "ppc64")


@pytest.mark.slow
@pytest.mark.parametrize("function", ["api", "batch"])
def test_given_the_lock_file_when_packaging_then_the_package_imports_on_cpython_312_and_fits_lambda(
    function: str, tmp_path: Path
) -> None:
    # When the package is built (cached under build/ after the first run)
    report = build_lambda_package(function, tmp_path / function)  # type: ignore[arg-type]
    # Then it fits Lambda's limit, carries our code, and leaves out what the runtime provides
    assert 0 < report.zipped_bytes < report.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT_BYTES
    assert (tmp_path / function / "lambdas" / "__init__.py").is_file()
    assert not (tmp_path / function / "botocore").exists()
    # And it carries CPython 3.12 bytecode for our code and its wheels (Lambda cannot write any)
    assert (tmp_path / function / "lambdas" / function / "__pycache__" / "handler.cpython-312.pyc").is_file()
    assert list((tmp_path / function / "numpy").rglob("*.cpython-312.pyc"))
    # And its wheels import with a bare CPython 3.12 that sees only the package (like Lambda)
    modules = ["numpy", "onnxruntime", "pydantic", "aws_lambda_powertools"]
    if function == "batch":
        modules += ["pyarrow.parquet", "pyarrow.csv", "pyarrow.json"]
    probe = f"import sys; sys.path[:0] = [{str(tmp_path / function)!r}]; " + "; ".join(
        f"import {m}" for m in modules
    )
    python312 = shutil.which("python3.12") or sys.executable
    completed = subprocess.run(
        [python312, "-S", "-I", "-c", probe], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


# ELF e_machine values (offset 18, little-endian): what CPU a shared library was built for.
_ELF_MACHINES = {62: "x86_64", 183: "arm64"}


def _elf_machine(library: Path) -> str:
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{library} is not an ELF file"
    return _ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "other")


@pytest.mark.slow
@pytest.mark.parametrize("function", ["api", "batch"])
def test_given_the_arm64_option_when_packaging_then_every_native_library_is_arm64_and_it_fits(
    function: str, tmp_path: Path
) -> None:
    # When the package is built for Graviton (lambdaArchitecture=arm64 in cdk.json's context)
    package = tmp_path / function
    report = build_lambda_package(function, package, "arm64")  # type: ignore[arg-type]
    # Then it fits Lambda's limit and carries CPython 3.12 bytecode
    assert 0 < report.zipped_bytes < report.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT_BYTES
    assert (package / "lambdas" / function / "__pycache__" / "handler.cpython-312.pyc").is_file()
    # And every native library (onnxruntime's, numpy's, pydantic-core's, pyarrow's) is built for arm64:
    # this machine cannot run them, so the ELF headers are what can be checked here
    libraries = [path for path in package.rglob("*.so*") if path.is_file() and not path.is_symlink()]
    machines = {library.relative_to(package).as_posix(): _elf_machine(library) for library in libraries}
    assert any(name.startswith("onnxruntime/") for name in machines)
    assert set(machines.values()) == {"arm64"}, {
        name: machine for name, machine in machines.items() if machine != "arm64"
    }


@pytest.mark.slow
def test_given_npm_ci_when_cdk_synth_runs_offline_then_it_succeeds_with_real_bundling(tmp_path: Path) -> None:
    if not CDK_CLI.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run `npm ci` (make setup) before the infra tests")
        pytest.skip("node_modules/.bin/cdk missing: run `npm ci`")
    outdir = tmp_path / "cdk.out"
    completed = subprocess.run(
        [str(CDK_CLI), "synth", "--no-notices", "--no-version-reporting", "--quiet", "--output", str(outdir)],
        cwd=REPO_ROOT,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert "LoanScoring-dev" in manifest["artifacts"]
    # The Lambda assets hold the real packages (wheels + code), one per function, not the placeholder
    staged = [d for d in outdir.glob("asset.*") if (d / "onnxruntime").is_dir()]
    assert len(staged) == 2
    with_pyarrow = [d for d in staged if (d / "pyarrow").is_dir()]
    assert len(with_pyarrow) == 1  # only the batch function carries Parquet support
    assert all((d / "lambdas" / "__init__.py").is_file() for d in staged)
