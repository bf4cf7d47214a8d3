"""deploy/.env.example lists every setting with the value a deployment really gets: the code's
default, or the value compose / the image sets; and every variable the compose files read."""

from __future__ import annotations

import re

import pytest

from jobs.settings import JobSettings
from scoring.settings import BackendSettings
from service.settings import GatewaySettings
from tests.deploy.deployment import ENV_EXAMPLE, REPO, image, interpolated_variables
from worker.settings import WorkerSettings

CLASSES = (BackendSettings, GatewaySettings, JobSettings, WorkerSettings)
LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def listed() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = LINE.match(line.strip())
        if match:
            assert match.group(1) not in out, f"{match.group(1)} is listed twice"
            out[match.group(1)] = match.group(2)
    return out


def fields() -> dict[str, tuple[type, str]]:
    """Every settings field by environment name, with a class that has it."""
    out = {}
    for cls in CLASSES:
        for name in cls.model_fields:
            out.setdefault(f"NEWSCLF_{name.upper()}", (cls, name))
    return out


def deployment_values() -> dict[str, str]:
    """NEWSCLF_* values the deployment itself fixes: the image's ENV, compose's defaults and
    literal values."""
    values = {k: v for k, v in image("gateway").env.items() if k.startswith("NEWSCLF_")}
    values.update({k: v for k, v in interpolated_variables().items() if k.startswith("NEWSCLF_")})
    compose = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    for name, value in re.findall(r"^\s+(NEWSCLF_[A-Z0-9_]+): (\S[^\n]*)$", compose, re.MULTILINE):
        if not value.startswith("${"):
            values[name] = value.strip('"')
    return values


def test_every_setting_is_listed():
    missing = set(fields()) - set(listed())
    assert not missing, f"add to deploy/.env.example: {sorted(missing)}"


def test_no_unknown_setting_is_listed():
    unknown = {n for n in listed() if n.startswith("NEWSCLF_")} - set(fields())
    assert not unknown, f"deploy/.env.example lists settings the code does not have: {sorted(unknown)}"


def test_every_compose_variable_is_listed_with_its_default():
    shown = listed()
    for name, default in interpolated_variables().items():
        assert name in shown, f"docker-compose reads ${{{name}}}; list it in deploy/.env.example"
        assert shown[name] == default, f"{name}: .env.example says {shown[name]!r}, compose defaults to {default!r}"


def wrong_values(shown: dict[str, str], monkeypatch) -> list[str]:
    """Settings whose listed value differs from what a deployment gets."""
    fixed, wrong = deployment_values(), []
    for env_name, (cls, field) in fields().items():
        if env_name in fixed:
            if shown[env_name] != fixed[env_name]:
                wrong.append(f"{env_name}: the deployment uses {fixed[env_name]!r}")
            continue
        default = cls.model_fields[field].get_default(call_default_factory=True)
        if default is None:
            if shown[env_name] != "":
                wrong.append(f"{env_name} has no default; show it empty")
            continue
        for other in fields():
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(env_name, shown[env_name])
        if getattr(cls(), field) != default:
            wrong.append(f"{env_name}: listed {shown[env_name]!r}, the code's default is {default!r}")
    return wrong


def test_listed_values_are_what_a_deployment_gets(monkeypatch):
    assert wrong_values(listed(), monkeypatch) == []


@pytest.mark.parametrize("name, value", [("NEWSCLF_TFSERVING_RETRIES", "5"),
                                         ("NEWSCLF_MODEL_ROOT", "models"),
                                         ("NEWSCLF_TLS_CERT", "/etc/cert.pem")])
def test_a_wrong_listed_value_is_caught(monkeypatch, name, value):
    shown = {**listed(), name: value}
    assert [w for w in wrong_values(shown, monkeypatch) if w.startswith(name)]


def test_compose_file_hint_names_the_cpu_override():
    files = listed()["COMPOSE_FILE"].split(":")
    assert files[0] == "docker-compose.yml" and all((REPO / f).is_file() for f in files)
