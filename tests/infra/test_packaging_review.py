"""Review of the Docker-free Lambda packaging: reproducible output, nothing from the build machine inside.

The small builds here go through ``build_lambda_package`` with a stand-in repository (a tiny ``lambdas/``
and model bundle) and two small locked wheels (``jmespath`` brings a console script, ``six`` a module),
so they take seconds; the last test checks the real API package, reusing the cached build.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import lambda_package
from infra.lambda_package import REPO_ROOT, build_lambda_package

# As _export_requirements gives them: pinned, with uv.lock's hashes (the builder installs in hash-checking
# mode, so the bare pins these tests used before are refused; tests/infra/test_supply_chain.py checks why).
SMALL_REQUIREMENTS = [
    "jmespath==1.1.0 --hash=sha256:472c87d80f36026ae83c6ddd0f1d05d4e510134ed462851fd5f754c8c3cbb88d"
    " --hash=sha256:a5663118de4908c91729bea0acadca56526eb2698e83de10cd116ae0f4e97c64",
    "six==1.17.0 --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"
    " --hash=sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81",
]
BUNDLE_DIR = "model_artifacts/tiny"


def _fake_repo(root: Path) -> Path:
    """A repository with the layout the builder reads: lambdas/<function>/handler.py and a bundle."""
    handler = root / "lambdas" / "api" / "handler.py"
    handler.parent.mkdir(parents=True)
    (root / "lambdas" / "__init__.py").write_text("")
    (handler.parent / "__init__.py").write_text("")
    handler.write_text("def handler(event, context):\n    raise RuntimeError('where am I')\n")
    bundle = root / BUNDLE_DIR
    bundle.mkdir(parents=True)
    (bundle / "model_card.json").write_text("{}")
    return root


@pytest.fixture
def small_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambda_package, "_export_requirements", lambda *_: list(SMALL_REQUIREMENTS))


@pytest.fixture
def strict_umask() -> Iterator[None]:
    previous = os.umask(0o077)  # what a hardened developer machine or CI runner may set
    try:
        yield
    finally:
        os.umask(previous)


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def test_given_the_same_inputs_in_two_checkouts_when_packaging_then_the_packages_are_byte_identical(
    tmp_path: Path, small_requirements: None
) -> None:
    # Given two checkouts of the same code in different places (two machines, or CI and a laptop)
    first = build_lambda_package(
        "api", tmp_path / "out-1", repo_root=_fake_repo(tmp_path / "one"), model_bundle_dir=BUNDLE_DIR
    )
    second = build_lambda_package(
        "api", tmp_path / "out-2", repo_root=_fake_repo(tmp_path / "two" / "x"), model_bundle_dir=BUNDLE_DIR
    )

    # Then the inputs hash the same and every file, bytecode included, has the same bytes: CDK's output
    # hash (the asset's identity) does not change, so an unchanged function is not redeployed
    assert first.input_hash == second.input_hash
    one, two = _files(tmp_path / "out-1"), _files(tmp_path / "out-2")
    assert "lambdas/api/__pycache__/handler.cpython-312.pyc" in one
    assert sorted(one) == sorted(two)
    assert [name for name in one if one[name] != two[name]] == []
    # And no file carries a path of the build machine (bytecode records where it was compiled)
    for name, content in one.items():
        assert str(tmp_path).encode() not in content, name
        assert str(REPO_ROOT).encode() not in content, name
    assert b"/var/task/lambdas/api/handler.py" in one["lambdas/api/__pycache__/handler.cpython-312.pyc"]


def test_given_wheels_with_console_scripts_when_packaging_then_no_scripts_or_installer_lock_ship(
    tmp_path: Path, small_requirements: None
) -> None:
    build_lambda_package(
        "api", tmp_path / "out", repo_root=_fake_repo(tmp_path / "repo"), model_bundle_dir=BUNDLE_DIR
    )

    # jmespath's jp.py would land in bin/ with a '#!/…/.venv/bin/python' line; the installer leaves .lock
    assert (tmp_path / "out" / "jmespath" / "__init__.py").is_file()
    assert not (tmp_path / "out" / "bin").exists()
    assert not (tmp_path / "out" / ".lock").exists()


def test_given_dotfiles_beside_the_code_when_packaging_then_they_neither_ship_nor_change_the_hash(
    tmp_path: Path, small_requirements: None
) -> None:
    repo = _fake_repo(tmp_path / "repo")
    clean = build_lambda_package("api", tmp_path / "clean", repo_root=repo, model_bundle_dir=BUNDLE_DIR)
    # Given a local secrets file, OS and tool litter next to the code and the model
    (repo / "lambdas" / "api" / ".env").write_text("DB_PASSWORD=hunter2\n")
    (repo / "lambdas" / ".DS_Store").write_bytes(b"\0\1")
    (repo / "lambdas" / "api" / ".pytest_cache").mkdir()
    (repo / "lambdas" / "api" / ".pytest_cache" / "lastfailed.py").write_text("{}")
    (repo / BUNDLE_DIR / ".model.onnx.swp").write_bytes(b"swap")

    report = build_lambda_package("api", tmp_path / "out", repo_root=repo, model_bundle_dir=BUNDLE_DIR)

    shipped = _files(tmp_path / "out")
    assert [name for name in shipped if any(part.startswith(".") for part in name.split("/"))] == []
    assert report.input_hash == clean.input_hash
    # While a real code change does change it
    (repo / "lambdas" / "api" / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    changed = build_lambda_package("api", tmp_path / "out", repo_root=repo, model_bundle_dir=BUNDLE_DIR)
    assert changed.input_hash != clean.input_hash


def test_given_a_strict_umask_when_packaging_then_lambda_can_read_every_file_and_folder(
    tmp_path: Path, small_requirements: None, strict_umask: None
) -> None:
    # Given a checkout made under umask 077 (files 0600, folders 0700)
    repo = _fake_repo(tmp_path / "repo")

    build_lambda_package("api", tmp_path / "out", repo_root=repo, model_bundle_dir=BUNDLE_DIR)

    # Then every entry is readable (and every folder searchable) by others: Lambda runs the code as a
    # user that does not own the unzipped files, and keeps the modes the zip gives them
    unreadable = [
        f"{path.relative_to(tmp_path / 'out')} {stat.filemode(path.stat().st_mode)}"
        for path in (tmp_path / "out").rglob("*")
        if (path.stat().st_mode & (0o005 if path.is_dir() else 0o004)) != (0o005 if path.is_dir() else 0o004)
    ]
    assert unreadable == []


@pytest.mark.slow
def test_given_the_real_api_package_when_built_then_it_carries_no_build_machine_path_or_scripts(
    tmp_path: Path,
) -> None:
    package = tmp_path / "api"
    build_lambda_package("api", package)  # the cached build the other package tests use
    assert not (package / "bin").exists()
    assert not (package / ".lock").exists()
    leaking = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and str(REPO_ROOT).encode() in path.read_bytes()
    ]
    assert leaking == []
