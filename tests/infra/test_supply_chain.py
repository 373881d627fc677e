"""Supply chain of the Lambda packages: the deployed bytes are uv.lock's, and the same on every machine.

The builds here use a stand-in repository whose uv.lock locks one small wheel (``six``), so they take
seconds; the lock's hashes are PyPI's. A tampered wheel is made here (same name and version as the
locked one, other bytes) and offered the way a developer machine or CI runner would: a mirror set as
the index, or a find-links folder.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.lambda_package import REPO_ROOT, PackageBuildError, _export_requirements, build_lambda_package

BUNDLE_DIR = "model_artifacts/tiny"
TAMPERED_MARKER = "TAMPERED_BY_THE_MIRROR"
SIX_WHEEL = "six-1.17.0-py2.py3-none-any.whl"

_PYPROJECT = """\
[project]
name = "stand-in"
version = "0.1.0"
requires-python = ">=3.12"
dependencies = []

[dependency-groups]
lambda = ["six==1.17.0"]

[tool.uv]
package = false
"""

# Written by `uv lock` for _PYPROJECT (the hashes are PyPI's for six 1.17.0, as in the repository's lock).
_UV_LOCK = """\
version = 1
revision = 5
requires-python = ">=3.12"

[[package]]
name = "six"
version = "1.17.0"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.pythonhosted.org/packages/94/e7/b2c673351809dca68a0e064b6af791aa332cf192da575fd474ed7d6f16a2/six-1.17.0.tar.gz", hash = "sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81", size = 34031, upload-time = "2024-12-04T17:35:28.174Z" }
wheels = [
    { url = "https://files.pythonhosted.org/packages/b7/ce/149a00dd41f10bc29e5921b496af8b574d8413afcd5e30dfa0ed46c2cc5e/six-1.17.0-py2.py3-none-any.whl", hash = "sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274", size = 11050, upload-time = "2024-12-04T17:35:26.475Z" },
]

[[package]]
name = "stand-in"
version = "0.1.0"
source = { virtual = "." }

[package.dev-dependencies]
lambda = [
    { name = "six" },
]

[package.metadata]

[package.metadata.requires-dev]
lambda = [{ name = "six", specifier = "==1.17.0" }]
"""  # noqa: E501

# Where uv may take wheels from besides the index it is given: cleared so a developer's own settings
# do not decide what these tests see.
_UV_SOURCE_VARIABLES = (
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
)


def _locked_repo(root: Path) -> Path:
    """A repository with the layout the builder reads, its own pyproject.toml and uv.lock."""
    handler = root / "lambdas" / "api" / "handler.py"
    handler.parent.mkdir(parents=True)
    (root / "lambdas" / "__init__.py").write_text("")
    (handler.parent / "__init__.py").write_text("")
    handler.write_text("import six\n\n\ndef handler(event, context):\n    return six.PY3\n")
    (root / BUNDLE_DIR).mkdir(parents=True)
    (root / BUNDLE_DIR / "model_card.json").write_text("{}")
    (root / "pyproject.toml").write_text(_PYPROJECT)
    (root / "uv.lock").write_text(_UV_LOCK)
    return root


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _write_tampered_six_wheel(folder: Path) -> Path:
    """A well-formed wheel with the locked wheel's file name and version, and other bytes."""
    files = {
        "six.py": f"PY3 = True\n{TAMPERED_MARKER} = True\n".encode(),
        "six-1.17.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: six\nVersion: 1.17.0\n",
        "six-1.17.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
            b"Tag: py2-none-any\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files["six-1.17.0.dist-info/RECORD"] = (record + "six-1.17.0.dist-info/RECORD,,\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / SIX_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


@pytest.fixture
def own_uv_sources(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in _UV_SOURCE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_given_a_mirror_serving_a_tampered_wheel_of_the_locked_version_when_packaging_then_it_is_refused(
    tmp_path: Path, own_uv_sources: pytest.MonkeyPatch
) -> None:
    # Given an index (an internal mirror, say) whose six 1.17.0 wheel is not the one uv.lock hashed
    project = tmp_path / "simple" / "six"
    _write_tampered_six_wheel(project)
    (project / "index.html").write_text(f'<html><body><a href="{SIX_WHEEL}">{SIX_WHEEL}</a></body></html>\n')
    own_uv_sources.setenv("UV_INDEX_URL", (tmp_path / "simple").as_uri())

    # When the package is built, then the build fails on the hash and names the package and the platform
    # (before: the tampered six.py shipped, silently)
    with pytest.raises(
        PackageBuildError, match=r"(?s)x86_64-manylinux_2_28.*Hash mismatch for `six==1\.17\.0`"
    ):
        build_lambda_package(
            "api", tmp_path / "out", repo_root=_locked_repo(tmp_path / "repo"), model_bundle_dir=BUNDLE_DIR
        )
    assert not (tmp_path / "out" / "six.py").exists()


def test_given_a_find_links_folder_with_a_tampered_wheel_when_packaging_then_the_locked_bytes_ship(
    tmp_path: Path, own_uv_sources: pytest.MonkeyPatch
) -> None:
    # Given a find-links folder (a developer's local wheels) holding a tampered six 1.17.0 beside the index
    _write_tampered_six_wheel(tmp_path / "wheels")
    own_uv_sources.setenv("UV_FIND_LINKS", str(tmp_path / "wheels"))

    build_lambda_package(
        "api", tmp_path / "out", repo_root=_locked_repo(tmp_path / "repo"), model_bundle_dir=BUNDLE_DIR
    )

    # Then the package holds the locked wheel's six.py, not the folder's (before: the folder's shipped)
    shipped = (tmp_path / "out" / "six.py").read_text()
    assert TAMPERED_MARKER not in shipped
    assert '__version__ = "1.17.0"' in shipped


def _locked_hashes() -> dict[str, set[str]]:
    """Every hash uv.lock records for each package version (wheels and sdist), keyed 'name==version'."""
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    hashes: dict[str, set[str]] = {}
    for package in lock["package"]:
        artefacts = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        hashes[f"{package['name']}=={package['version']}"] = {artefact["hash"] for artefact in artefacts}
    return hashes


@pytest.mark.parametrize("function", ["api", "batch"])
def test_given_the_repository_lock_when_exporting_then_each_requirement_carries_exactly_its_locked_hashes(
    function: str,
) -> None:
    requirements = _export_requirements(function, REPO_ROOT)
    locked = _locked_hashes()

    # Then every requirement is pinned and carries uv.lock's hashes for that version, all of them and no
    # other (before: `--no-hashes`, so any bytes under the right name and version were installed)
    assert requirements
    for requirement in requirements:
        words = requirement.split()
        pinned = words[0]
        hashes = {word.removeprefix("--hash=") for word in words if word.startswith("--hash=")}
        assert pinned in locked, requirement
        assert hashes == locked[pinned], requirement
    # And what Lambda's runtime provides is left out with its hashes (no stray '--hash' line that would
    # attach to another requirement or break hash-checking mode)
    names = {requirement.split("==")[0] for requirement in requirements}
    assert names.isdisjoint({"boto3", "botocore", "s3transfer"})
    assert all(requirement.split()[0].count("==") == 1 for requirement in requirements)


@pytest.fixture
def restore_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    return {
        path.relative_to(root).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in root.rglob("*")
        if not path.is_symlink()
    }


def test_given_two_machines_with_different_umasks_when_packaging_then_every_mode_is_the_same(
    tmp_path: Path, own_uv_sources: pytest.MonkeyPatch, restore_umask: None
) -> None:
    # Given the same code checked out under umask 022 (most machines) and 002 (group-writable defaults)
    builds = {}
    for umask in (0o022, 0o002):
        os.umask(umask)
        repo = _locked_repo(tmp_path / f"repo-{umask:o}")
        build_lambda_package("api", tmp_path / f"out-{umask:o}", repo_root=repo, model_bundle_dir=BUNDLE_DIR)
        builds[umask] = _modes(tmp_path / f"out-{umask:o}")

    # Then every file and folder has the same mode in both packages, 0644 or 0755: CDK's zip records
    # each file's mode while its asset hash ignores modes, so a difference would give one asset two
    # contents, whichever machine uploaded first deciding what runs (before: 0664 under umask 002)
    assert builds[0o022] == builds[0o002]
    assert set(builds[0o022].values()) <= {0o644, 0o755}
    assert builds[0o022]["lambdas/api/handler.py"] == 0o644
    assert builds[0o022]["six.py"] == 0o644


def _dockerfile_instructions() -> list[str]:
    """training/Dockerfile's instructions as Docker reads them: continuation lines joined, comments out."""
    instructions: list[str] = []
    current = ""
    for line in (REPO_ROOT / "training" / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        if line.endswith("\\"):
            current += line[:-1]
            continue
        instructions.append(" ".join((current + line).split()))
        current = ""
    return instructions


def test_given_the_training_dockerfile_then_uv_is_installed_pinned_and_hash_checked() -> None:
    (install,) = [
        line for line in _dockerfile_instructions() if line.startswith("RUN") and "pip install" in line
    ]
    # Then pip installs one exact uv version in hash-checking mode, binary only (before: "uv>=0.13,<0.14",
    # whatever the index served that day)
    assert re.search(r"\buv==\d+\.\d+\.\d+ ", install), install
    assert re.findall(r"--hash=sha256:[0-9a-f]{64}\b", install), install
    assert "--require-hashes" in install
    assert "--only-binary=:all:" in install


def test_given_the_training_dockerfile_then_dependencies_come_from_the_lock_without_source_builds() -> None:
    (sync,) = [line for line in _dockerfile_instructions() if line.startswith("RUN uv sync")]
    # uv sync checks every download against uv.lock's hash; --frozen installs the lock as committed (never
    # re-resolved in the build) and --no-build fails on a package without a wheel instead of building it
    assert "--frozen" in sync.split() or "--locked" in sync.split()
    assert "--no-build" in sync.split()
    assert "--group training" in sync
