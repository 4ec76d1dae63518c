"""The Dockerfile as shipped: hadolint clean, one hash-locked dependency layer that agrees with
pyproject.toml, a digest-pinned base, a non-root final stage without the compiler."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.deploy._deploy_files import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "deploy" / "requirements.lock"


def _lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        requirement, _, hash_part = line.partition(" --hash=sha256:")
        name, _, version = requirement.partition("==")
        assert re.fullmatch(r"[0-9a-f]{64}", hash_part), f"no sha256 hash for {name} in {LOCK.name}"
        pins[_normalise(name)] = version
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_hadolint_passes_with_every_ignored_rule_explained() -> None:
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rules = line.split("ignore=")[1].split(",")
            comments = "\n".join(lines[max(0, number - 4) : number])
            for rule in rules:
                assert f"{rule.strip()}:" in comments, (
                    f"hadolint rule {rule} ignored without a reason above it"
                )


def test_lock_pins_every_runtime_dependency_at_the_version_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _lock_pins()
    for requirement in project["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        assert _normalise(name) in pins, f"{name} is not in {LOCK.name}: run scripts/lock-image-deps.py"
        assert pins[_normalise(name)] == version, (
            f"{name}: pyproject pins {version}, {LOCK.name} has {pins[_normalise(name)]}; "
            "run scripts/lock-image-deps.py"
        )
    # The image builds the project without build isolation, so the backend must be locked too.
    setuptools_major = int(pins["setuptools"].split(".")[0])
    assert setuptools_major >= 77, "pyproject's build-system needs setuptools>=77"
    assert "wheel" in pins


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    text = DOCKERFILE.read_text()
    lock_install = text.index("--require-hashes")
    for source in ("COPY src", "COPY proto"):
        assert text.index(source) > lock_install, f"{source} comes before the locked dependency install"


def test_base_is_a_build_argument_defaulting_to_a_digest_and_both_stages_use_it() -> None:
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert default is not None
    assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", default.group(1)), default.group(1)
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"], stages


def test_final_stage_runs_as_a_numeric_non_root_user_without_the_compiler() -> None:
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    assert re.search(r"^USER 10001:10001$", final, re.MULTILINE)
    assert "gcc" not in final and "apt-get install" not in final
    assert "PYTHONUNBUFFERED=1" in final
    for label in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in final


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    patterns = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    admitted = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.MULTILINE):
        copied |= {source.rstrip("/") for source in line.split()[:-1]}  # the last word is the target
    assert copied == admitted, f"COPY sources {sorted(copied)} vs .dockerignore {sorted(admitted)}"
