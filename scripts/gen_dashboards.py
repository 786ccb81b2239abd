"""Generate the Grafana dashboards in deploy/grafana/dashboards from code.

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39), no builder
library: two boards of timeseries, stat and bar panels need a dozen lines of helpers, and
the JSON is committed so that Grafana's file provisioning reads it as is. Every query reads
the recording rules of deploy/prometheus/recording.yml or the node's own metrics; the
end-to-end test evaluates each one against a real Prometheus.

    python scripts/gen_dashboards.py          # write the JSON files
    python scripts/gen_dashboards.py --check  # exit 1 if they differ from the code
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
Panel = dict[str, Any]


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(
    kind: str,
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    x: int = 0,
    y: int = 0,
    w: int = 12,
    h: int = 8,
) -> Panel:
    """One panel: `queries` are (PromQL, legend) pairs."""
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [_target(e, legend, refs[i]) for i, (e, legend) in enumerate(queries)],
    }


def _layout(panels: list[Panel]) -> list[Panel]:
    """Two panels a row, in order; ids numbered."""
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"].update({"x": (i % 2) * 12, "y": (i // 2) * 8})
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[Panel], node_var: bool) -> Any:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        }
    ]
    if node_var:
        variables.append(
            {
                "name": "member",
                "label": "Node",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": "label_values(liaison_directory_serial, member)", "refId": "N"},
                "definition": "label_values(liaison_directory_serial, member)",
                "refresh": 2,
                "current": {},
            }
        )
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["liaison", "oversight"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "timezone": "utc",
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": _layout(panels),
    }


def overview() -> Any:
    all_ = 'peer="all"'
    return dashboard(
        "liaison-federation",
        "Liaison: federation overview",
        "The cooperation indicators of every node this Prometheus scrapes (docs/oversight.md).",
        [
            panel(
                "timeseries",
                "Successful exchanges per hour, by country",
                "Matches that hit and Fetches that disclosed a record, answered by each node.",
                [(f"3600 * sum by (member) (liaison:exchanges:rate1h{{{all_}}})", "{{member}}")],
            ),
            panel(
                "timeseries",
                "Hit rate of Matches, by country",
                "Allowed Matches that found a record, over the last day.",
                [(f"liaison:match_hit:ratio{{{all_}}}", "{{member}}")],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Refusals per hour, by reason",
                "Each reason given (a refusal may give several), all nodes.",
                [
                    (
                        f"3600 * sum by (reason) (liaison:refusals_by_reason:rate1h{{{all_}}})",
                        "{{reason}}",
                    )
                ],
            ),
            panel(
                "timeseries",
                "Answer latency (95th percentile), by method",
                "From receipt to answer, the slowest node for each method.",
                [("max by (method) (liaison:request_duration_seconds:p95_5m)", "{{method}}")],
                unit="s",
            ),
            panel(
                "timeseries",
                "Tickets decided before their legal deadline",
                "Approved or refused by an operator, among all decided (expiries are misses).",
                [(f"liaison:ticket_decision_within_deadline:ratio{{{all_}}}", "{{member}}")],
                unit="percentunit",
            ),
            panel(
                "bargauge",
                "Pending tickets by share of their deadline used",
                "Across the federation, now.",
                [("sum by (bucket) (liaison_tickets_pending_deadline_used)", "{{bucket}}")],
            ),
            panel(
                "stat",
                "Secure-channel ratio",
                "Calls over verified mTLS with a valid signature, among all calls: must be 1.",
                [(f"min(liaison:secure_channel:ratio{{{all_}}})", "lowest node")],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Legal basis of requests",
                "Each legal basis's share of the signed requests, all nodes.",
                [
                    (
                        "sum by (legal_basis) (increase(liaison_legal_basis_use_total[1d]))"
                        " / scalar(sum(increase(liaison_legal_basis_use_total[1d])))",
                        "{{legal_basis}}",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Joint investigation teams",
                "Share of requests under a JIT agreement, by node.",
                [(f"liaison:jit_use:share{{{all_}}}", "{{member}}")],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Refused for their legal basis",
                "Requests refused as not agreed or insufficient, among the signed requests.",
                [(f"liaison:legal_basis_refusal:ratio{{{all_}}}", "{{member}}")],
                unit="percentunit",
            ),
        ],
        node_var=False,
    )


def node_detail() -> Any:
    sel = 'member="$member"'
    peers = f'{sel}, peer!="all"'
    return dashboard(
        "liaison-node",
        "Liaison: node detail",
        "One node's indicators, by the peer that asked (docs/oversight.md).",
        [
            panel(
                "timeseries",
                "Successful exchanges per hour, by peer",
                "Matches that hit and Fetches that disclosed a record.",
                [(f"3600 * liaison:exchanges:rate1h{{{peers}}}", "{{peer}}")],
            ),
            panel(
                "timeseries",
                "Requests per hour, by method and decision",
                "Every call answered or refused.",
                [
                    (
                        f"3600 * sum by (method, decision) "
                        f"(rate(liaison_requests_total{{{sel}}}[1h]))",
                        "{{method}} {{decision}}",
                    )
                ],
            ),
            panel(
                "timeseries",
                "Hit rate, by peer",
                "Allowed Matches that found a record, over the last day.",
                [(f"liaison:match_hit:ratio{{{peers}}}", "{{peer}}")],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Fetches answered at once, by peer",
                "Among Fetches answered at once or sent to a person first.",
                [(f"liaison:fetch_at_once:ratio{{{peers}}}", "{{peer}}")],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Refusals per hour, by peer and reason",
                "Each reason given.",
                [(f"3600 * liaison:refusals_by_reason:rate1h{{{peers}}}", "{{peer}} {{reason}}")],
            ),
            panel(
                "timeseries",
                "Tickets",
                "Decided before the deadline (ratio, by peer), and the median time to decision.",
                [
                    (f"liaison:ticket_decision_within_deadline:ratio{{{peers}}}", "{{peer}}"),
                    (f"liaison:ticket_resolution_seconds:median1d{{{sel}}} / 3600", "median (h)"),
                ],
            ),
            panel(
                "timeseries",
                "Legal basis, by peer",
                "Each legal basis's share of the peer's signed requests.",
                [(f"liaison:legal_basis_use:share{{{peers}}}", "{{peer}} {{legal_basis}}")],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Secure-channel ratio, by peer",
                "Must be 1; below it, see the insecure calls by peer.",
                [
                    (f"liaison:secure_channel:ratio{{{peers}}}", "{{peer}}"),
                    (
                        f'3600 * rate(liaison_calls_total{{{sel}, channel="insecure"}}[1h])',
                        "insecure/h {{peer}}",
                    ),
                ],
            ),
            panel(
                "timeseries",
                "Answer latency (95th percentile), by method",
                "From receipt to answer.",
                [(f"liaison:request_duration_seconds:p95_5m{{{sel}}}", "{{method}}")],
                unit="s",
            ),
            panel(
                "stat",
                "Trust",
                "Directory serial, days to this node's certificate expiry, audit tree size.",
                [
                    (f"liaison_directory_serial{{{sel}}}", "directory serial"),
                    (
                        "(liaison_certificate_expiry_timestamp_seconds"
                        f'{{{sel}, node="$member"}} - time()) / 86400',
                        "certificate days left",
                    ),
                    (f"liaison_audit_tree_size{{{sel}}}", "audit entries"),
                ],
            ),
            panel(
                "timeseries",
                "Notices",
                "Deliveries of this node's notices by state, and notices received by outcome.",
                [
                    (f"liaison_notice_outbox{{{sel}}}", "outbox {{state}}"),
                    (
                        f"sum by (outcome) (increase(liaison_notices_received_total{{{sel}}}[1d]))",
                        "received {{outcome}}",
                    ),
                ],
            ),
            panel(
                "timeseries",
                "Witnessing",
                "Failures verifying peers' logs, by log and reason, over an hour.",
                [
                    (
                        f"increase(liaison_witness_failures_total{{{sel}}}[1h])",
                        "{{log}} {{reason}}",
                    )
                ],
            ),
        ],
        node_var=True,
    )


DASHBOARDS = {"liaison-federation.json": overview, "liaison-node.json": node_detail}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}: run python scripts/gen_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
