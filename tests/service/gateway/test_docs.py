"""docs/gateway.md documents every gateway setting under its environment variable."""

from __future__ import annotations

from service.settings import GatewaySettings
from tests.support.processes import REPO


def test_every_setting_is_in_the_settings_table():
    text = (REPO / "docs" / "gateway.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `NEWSCLF_")}
    expected = {f"NEWSCLF_{name.upper()}" for name in GatewaySettings.model_fields}
    assert rows == expected, f"missing {sorted(expected - rows)}, unknown {sorted(rows - expected)}"
