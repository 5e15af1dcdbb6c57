"""What the dashboard and the alert rules query, for the tests that check it against what the
service exports (offline from the metrics registry, and live from a running service's /metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "streamscore.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

_GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)\b")


def dashboard_queries() -> dict[str, str]:
    """``panel title / refId`` -> PromQL, with Grafana's range variables replaced by ``5m``."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {f"{p['title']} / {t['refId']}": _GRAFANA_VARIABLES.sub("5m", t["expr"])
            for p in panels for t in p["targets"]}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alert_queries() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for rule in alert_rules()}


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects; raises ValueError if it does not parse or
    selects series by anything but an exact name."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers
                                      if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal), None)
            if name is None:
                raise ValueError(f"{expr}: a selector without an exact metric name: {node}")
            names.add(name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where the dashboard (panel / refId) and the alert rules use it."""
    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_queries().items(), *(("alert " + k, v) for k, v in alert_queries().items())]:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used
