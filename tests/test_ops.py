"""The operators' files in ops/: alert rules pass promtool's checks and unit tests, every
alert is tested, and every metric the rules and the dashboard name is one Accord exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

# Imported for the metrics they register: every family a rule may name.
from accord_kit import boundary, metrics, outbox, server  # noqa: F401
from accord_kit.testing import REPO_ROOT

RULES = REPO_ROOT / "ops/prometheus/alerts.yml"
RULE_TESTS = REPO_ROOT / "ops/prometheus/alerts_test.yml"
DASHBOARD = REPO_ROOT / "ops/grafana/accord.json"
METRIC = re.compile(r"\baccord_[a-z_]+\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: install Debian's `prometheus` package "
            "(`make install` does as root)",
            pytrace=False,
        )
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_alert_rules_are_valid() -> None:
    out = run_promtool("check", "rules", str(RULES))
    assert "SUCCESS" in out, out


def test_alert_rules_pass_their_unit_tests() -> None:
    out = run_promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out, out


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_is_shown_to_fire_and_to_stay_quiet() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in _alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{alert['alert']} is never seen firing"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert['alert']} never stays quiet"


def _exported() -> set[str]:
    return {family.name for family in REGISTRY.collect()}


def _named(text: str) -> Iterator[str]:
    exported = _exported()
    for found in METRIC.findall(text):
        family = found
        for suffix in SUFFIXES:
            if found.endswith(suffix) and found.removesuffix(suffix) in exported:
                family = found.removesuffix(suffix)
        yield family


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = _exported()
    in_rules = set(_named(" ".join(a["expr"] for a in _alerts())))
    panels = json.loads(DASHBOARD.read_text())["panels"]
    in_dashboard = set(_named(" ".join(t["expr"] for p in panels for t in p.get("targets", []))))
    assert in_rules
    assert in_dashboard
    assert in_rules <= exported, in_rules - exported
    assert in_dashboard <= exported, in_dashboard - exported
    # Every work metric is on the dashboard.
    work = {
        v._name  # prometheus_client keeps the family name there
        for v in vars(metrics).values()
        if hasattr(v, "_name") and hasattr(v, "collect")
    }
    assert work <= in_dashboard, work - in_dashboard
