"""deploy/: the compose stack and what it mounts (not run here), and the Grafana dashboard.

Checked: the three services, every bind-mounted file or folder exists, the stack's Prometheus
config passes `promtool check config` with the rule files mounted beside it, the agent's config
loads, and Grafana's provisioning points at the folder the dashboards are mounted in. The
dashboard is type-checked against Grafana's published schema (npm's @grafana/schema); its
queries run in the lab (tests/lab/test_dashboard.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.config import (
    BasicAuthSection,
    RemoteWriteConfig,
    RemoteWriteQueueSection,
    RemoteWriteTlsSection,
    load_config,
)
from agent.config.web import listen_policy

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def bind_mounts(service: str) -> dict[str, Path]:
    """The service's bind mounts: container path -> host path (named volumes left out)."""
    mounts = {}
    for spec in COMPOSE["services"][service].get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def test_stack_has_agent_prometheus_and_grafana() -> None:
    assert set(COMPOSE["services"]) == {"agent", "prometheus", "grafana"}
    assert (DEPLOY / COMPOSE["services"]["agent"]["build"] / "Dockerfile").is_file()
    assert set(COMPOSE["volumes"]) == {"prometheus-data", "grafana-data"}
    for service in COMPOSE["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{port} is published beyond loopback"


@pytest.mark.parametrize("service", ["agent", "prometheus", "grafana"])
def test_every_bind_mount_exists(service: str) -> None:
    mounts = bind_mounts(service)
    assert mounts
    for target, source in mounts.items():
        assert source.exists(), f"{service}: {source} (mounted at {target}) does not exist"


def test_agent_config_loads_and_listens_for_the_next_container() -> None:
    path = bind_mounts("agent")["/etc/reachprobe/config.yaml"]
    config = load_config(path)
    assert config.agent.listen_address == ("0.0.0.0", 9787)
    # It starts as shipped: `validate` (and so `run`) accepts its listen beyond loopback,
    # which is only safe while the stack publishes no port of the agent's.
    assert listen_policy(config.agent, str(path)) is None
    assert "ports" not in COMPOSE["services"]["agent"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_config_is_valid_with_its_mounts(tmp_path: Path) -> None:
    mounts = bind_mounts("prometheus")
    for target, source in mounts.items():
        assert target.startswith("/etc/prometheus/")
        shutil.copy(source, tmp_path / Path(target).name)
    proc = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--web.enable-remote-write-receiver" in COMPOSE["services"]["prometheus"]["command"]


def test_grafana_provisioning_matches_its_mounts() -> None:
    mounts = bind_mounts("grafana")
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "reachprobe.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert sorted(mounts[path].glob("*.json")), f"no dashboard JSON in {mounts[path]}"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"


GRAFANA_SCHEMA = "@grafana/schema@13.2.3"
TYPESCRIPT = "typescript@5"
DASHBOARD_TYPES = "@grafana/schema/dist/types/raw/dashboard/x/types.gen"
# The published schema is TypeScript, generated from Grafana's CUE: a literal typed as its
# Dashboard gets strict checks, unknown keys included. JSON cannot name a TS enum, so each
# string enum is accepted as its values.
CHECK_TS = """import type { Dashboard } from "%s";

type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

export const dashboard: Json<Dashboard> = %s;
"""


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not installed")
def test_dashboard_matches_grafanas_published_schema(tmp_path: Path) -> None:
    install = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", TYPESCRIPT, GRAFANA_SCHEMA],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr
    for dashboard in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        check = tmp_path / f"{dashboard.stem}.ts"
        check.write_text(CHECK_TS % (DASHBOARD_TYPES, dashboard.read_text()))
        proc = subprocess.run(
            [
                str(tmp_path / "node_modules/.bin/tsc"),
                "--noEmit",
                "--strict",
                "--moduleResolution",
                "node",
                "--module",
                "commonjs",
                "--target",
                "es2020",
                str(check),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"{dashboard.name}:\n{proc.stdout}{proc.stderr}"


def test_dashboard_queries_use_only_known_variables() -> None:
    for dashboard in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        data = json.loads(dashboard.read_text())
        names = {v["name"] for v in data["templating"]["list"]}
        assert data["uid"]
        assert data["title"]
        for panel in data["panels"]:
            for target in panel.get("targets", []):
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
                assert used <= names, f"{panel['title']}: unknown variables {used - names}"


def test_operators_doc_explains_every_alert() -> None:
    doc = (DEPLOY.parent / "docs" / "operators.md").read_text()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "reachprobe.alerts.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    for alert in alerts:
        assert f"**{alert}**" in doc, alert


def test_readme_documents_every_remote_write_key() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    sections = {
        "basic_auth": BasicAuthSection,
        "tls": RemoteWriteTlsSection,
        "queue": RemoteWriteQueueSection,
    }
    keys = [key for key in RemoteWriteConfig.model_fields if key not in sections]
    keys += [f"{name}.{key}" for name, model in sections.items() for key in model.model_fields]
    for key in keys:
        assert f"`{key}`" in readme, key
