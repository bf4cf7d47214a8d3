"""Reading the deployment as an operator's tools see it: the compose model as resolved by a real
``docker-compose config``, and the Dockerfile's build targets (environment, user, command,
health check) — so the tests compare the code with what would actually run."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_GPU = ("docker-compose.yml",)
COMPOSE_CPU = ("docker-compose.yml", "docker-compose.cpu.yml")
COMPOSE_SECRETS = ("docker-compose.yml", "deploy/compose.secrets.yml")
COMPOSE_FILES = (REPO / "docker-compose.yml", REPO / "docker-compose.cpu.yml",
                 REPO / "deploy" / "compose.common.yml", REPO / "deploy" / "compose.secrets.yml")
DOCKERFILE = REPO / "deploy" / "Dockerfile"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
TFSERVING_NAME = "tfserving"
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/setup.sh installs Debian's package)")
    return binary


def compose_config(files: tuple[str, ...], tmp_dir: Path, dotenv: str = "") -> dict:
    """``docker-compose config`` of ``files`` with ``dotenv`` as the .env and none of the
    operator's variables, so by default the values written in the files are what is checked."""
    env_file = tmp_dir / "deploy.env"
    env_file.write_text(dotenv)
    env = {k: v for k, v in os.environ.items() if not _compose_variable(k)}
    args = [compose_binary(), "--project-directory", str(REPO), "--env-file", str(env_file)]
    for name in files:
        args += ["-f", str(REPO / name)]
    result = subprocess.run([*args, "config"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"docker-compose config failed for {files}:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def _compose_variable(name: str) -> bool:
    return name.startswith(("NEWSCLF_", "COMPOSE_")) or name in interpolated_variables()


def interpolated_variables() -> dict[str, str | None]:
    """Every ``${VAR}`` / ``${VAR:-default}`` the compose files read, with its default."""
    found: dict[str, str | None] = {}
    for path in COMPOSE_FILES:
        for name, default in INTERPOLATION.findall(path.read_text(encoding="utf-8")):
            found[name] = default
    return found


# -- services ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def named_volume(self) -> bool:
        return not self.source.startswith(("/", "."))


@dataclass(frozen=True)
class Port:
    host_ip: str
    published: int | None
    target: int


def mounts(service: dict) -> list[Mount]:
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append(Mount(entry.get("source", ""), entry["target"], bool(entry.get("read_only"))))
            continue
        parts = entry.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        out.append(Mount(parts[0], parts[1], "ro" in mode.split(",")))
    return out


def mount_at(service: dict, target: str | Path) -> Mount | None:
    target = str(target)
    return next((m for m in mounts(service) if m.target == target), None)


def mount_holding(service: dict, path: str | Path) -> Mount | None:
    """The mount whose target contains ``path`` (the deepest one)."""
    path = Path(path)
    holding = [m for m in mounts(service) if path == Path(m.target) or Path(m.target) in path.parents]
    return max(holding, key=lambda m: len(m.target), default=None)


def ports(service: dict) -> list[Port]:
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            out.append(Port(entry.get("host_ip", ""), int(published) if published else None, int(entry["target"])))
            continue
        spec = entry.split("/")[0]
        parts = spec.split(":")
        target = int(parts[-1])
        published = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        host_ip = parts[-3] if len(parts) == 3 else ""
        out.append(Port(host_ip, published, target))
    return out


def enabled(config: dict) -> dict[str, dict]:
    """Services ``docker compose up`` starts: those without a profile."""
    return {name: svc for name, svc in config["services"].items() if not svc.get("profiles")}


def network_names(config: dict, name: str) -> set[str]:
    """Names a service answers to on its networks: its own and its aliases."""
    names = {name}
    networks = config["services"][name].get("networks") or {}
    if isinstance(networks, dict):
        for net in networks.values():
            names.update((net or {}).get("aliases", []))
    return names


def resolve_host(config: dict, host: str) -> list[str]:
    """Enabled services reachable as ``host``."""
    return [name for name in enabled(config) if host in network_names(config, name)]


def gpu_devices(service: dict) -> list[dict]:
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [d for d in devices if "gpu" in d.get("capabilities", [])]


def flags(argv: list[str]) -> dict[str, str]:
    """``--name=value`` command-line flags as a dict."""
    out = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            out[key] = value
    return out


def option(argv: list[str], name: str) -> str:
    """The value after ``name`` in an argv (``--model-root /models``)."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


# -- Dockerfile --------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    parent: str
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    healthcheck: list[str] | None = None
    copies: list[tuple[str, str]] = field(default_factory=list)  # (source, path in the image)
    expose: list[int] = field(default_factory=list)
    workdir: str = "/"


@dataclass
class Image:
    """What a build target ends up with, after inheriting from its parent stages."""

    target: str
    env: dict[str, str]
    user: str | None
    cmd: list[str] | None
    entrypoint: list[str] | None
    healthcheck: list[str] | None
    expose: list[int]

    @property
    def argv(self) -> list[str]:
        return unwrap([*(self.entrypoint or []), *(self.cmd or [])])


# Every image starts through deploy/entrypoint.py, which sets NAME from NAME_FILE and then
# execs the rest of its arguments: that rest is what the container runs.
SECRETS_WRAPPER = ["python", "/opt/newsclf/entrypoint.py"]


def unwrap(argv: list[str]) -> list[str]:
    return argv[len(SECRETS_WRAPPER):] if argv[:len(SECRETS_WRAPPER)] == SECRETS_WRAPPER else argv


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_stages(path: Path = DOCKERFILE) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages by name."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            parent = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else parent
            stage = stages[name] = Stage(name, parent)
            if parent in stages:
                stage.workdir = stages[parent].workdir
        elif stage is None:
            continue
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = value
        elif keyword == "USER":
            stage.user = rest
        elif keyword in ("CMD", "ENTRYPOINT"):
            argv = json.loads(rest)
            if keyword == "CMD":
                stage.cmd = argv
            else:
                stage.entrypoint = argv
        elif keyword == "HEALTHCHECK":
            stage.healthcheck = [] if rest.strip() == "NONE" else json.loads(rest[rest.index("CMD") + 3:])
        elif keyword == "WORKDIR":
            stage.workdir = str(Path(stage.workdir) / rest)
        elif keyword == "COPY":
            if "--from=" in rest:  # from another stage, not from the build context
                continue
            *sources, dest = [w for w in shlex.split(rest) if not w.startswith("--")]
            base = Path(stage.workdir) / dest
            into_dir = dest.endswith("/") or len(sources) > 1
            for source in sources:
                # A folder's contents go to dest; a file goes into dest when dest is a folder.
                final = base / Path(source).name if into_dir and not source.endswith("/") else base
                stage.copies.append((source, str(final)))
        elif keyword == "EXPOSE":
            stage.expose += [int(p.split("/")[0]) for p in rest.split()]
    return args, stages


def image(target: str, path: Path = DOCKERFILE) -> Image:
    _, stages = dockerfile_stages(path)
    assert target in stages, f"{path} has no target {target!r}; it has {sorted(stages)}"
    chain = []
    name = target
    while name in stages:
        chain.append(stages[name])
        name = stages[name].parent
    env: dict[str, str] = {}
    result = Image(target, env, None, None, None, None, [])
    for stage in reversed(chain):
        env.update(stage.env)
        result.user = stage.user or result.user
        if stage.entrypoint is not None:
            result.entrypoint = stage.entrypoint
        if stage.cmd is not None:
            result.cmd = stage.cmd
        if stage.healthcheck is not None:
            result.healthcheck = stage.healthcheck
        result.expose += stage.expose
    return result


def service_image(service: dict) -> Image:
    build = service["build"]
    assert Path(build["dockerfile"]).name == DOCKERFILE.name
    return image(build["target"])


def service_argv(service: dict) -> list[str]:
    """What the container runs: compose's entrypoint/command, else the image's (for the
    images built from deploy/Dockerfile; pulled images must say it in compose)."""
    if "build" not in service:
        return [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    built = service_image(service)
    entrypoint = service.get("entrypoint", built.entrypoint) or []
    command = service.get("command", built.cmd if "entrypoint" not in service else None) or []
    return unwrap([*entrypoint, *command])


def service_env(service: dict) -> dict[str, str]:
    """The container's NEWSCLF_* environment: the image's ENV overlaid with compose's values.

    Pass-through entries (no value in the file) are absent, as they are in a container
    started without a .env, so the code's defaults apply to them."""
    env = {k: v for k, v in service_image(service).env.items() if k.startswith("NEWSCLF_")}
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items() if v is not None})
    return env


def passed_through(service: dict) -> set[str]:
    return {k for k, v in (service.get("environment") or {}).items() if v is None}


def dockerignore_allows(path: str) -> bool:
    """Docker's rule for the build context: the last .dockerignore pattern that matches the
    path or one of its parent folders decides."""
    allowed = True
    parts = Path(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern == "**" or any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            allowed = negate
    return allowed
