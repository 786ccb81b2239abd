"""Copy the files the Helm chart ships from elsewhere in the repository into the chart.

Helm reads nothing outside a chart's folder, so deploy/helm/liaison/files/ holds copies:
- `policies/`: the Rego policy library the node loads (every `.rego` under policies/ but the
  `*_test.rego` unit tests, which no engine loads: node.policy.revision), for the policy
  ConfigMap;
- `prometheus/`: the Prometheus rule files of deploy/prometheus/ (every `*.yml` with rule
  `groups`: not the promtool unit tests, `*_test.yml`, nor the scrape configuration), for
  the PrometheusRule.

`--check` changes nothing and fails, naming each difference, when a copy has drifted from
its source (`make lint` and tests/unit/test_helm_chart.py run it); without it the copies are
made to match, stale ones deleted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "liaison"


def _policies(root: Path) -> Iterator[Path]:
    for path in sorted((root / "policies").rglob("*.rego")):
        if not path.name.endswith("_test.rego"):
            yield path


def _rules(root: Path) -> Iterator[Path]:
    """The rule files: those with top-level `groups` (not a scrape configuration such as
    federation.yml, nor the promtool unit tests)."""
    for path in sorted((root / "deploy" / "prometheus").glob("*.yml")):
        if path.name.endswith("_test.yml"):
            continue
        text = path.read_text(encoding="utf-8")
        if text.startswith("groups:") or "\ngroups:" in text:
            yield path


def expected(root: Path = ROOT) -> dict[str, bytes]:
    """What files/ must hold: chart-relative path -> content."""
    files = {
        f"files/policies/{p.relative_to(root / 'policies')}": p.read_bytes()
        for p in _policies(root)
    }
    files.update({f"files/prometheus/{p.name}": p.read_bytes() for p in _rules(root)})
    return files


def present(chart: Path = CHART) -> dict[str, bytes]:
    """What files/policies and files/prometheus hold now."""
    found: dict[str, bytes] = {}
    for sub in ("policies", "prometheus"):
        folder = chart / "files" / sub
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    found[str(path.relative_to(chart))] = path.read_bytes()
    return found


def differences(root: Path = ROOT, chart: Path = CHART) -> list[str]:
    want, have = expected(root), present(chart)
    out = [f"{name}: missing from the chart" for name in sorted(want.keys() - have.keys())]
    out += [f"{name}: not in the source any more" for name in sorted(have.keys() - want.keys())]
    out += [
        f"{name}: differs from its source"
        for name in sorted(want.keys() & have.keys())
        if want[name] != have[name]
    ]
    return out


def sync(root: Path = ROOT, chart: Path = CHART) -> None:
    want = expected(root)
    for name in present(chart).keys() - want.keys():
        (chart / name).unlink()
    for name, content in want.items():
        target = chart / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
    for sub in ("policies", "prometheus"):  # folders a deleted file left empty
        for folder in sorted((chart / "files" / sub).rglob("*"), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; fail if a copy has drifted"
    )
    args = parser.parse_args(argv)
    if args.check:
        found = differences()
        for line in found:
            print(f"deploy/helm/liaison/{line}", file=sys.stderr)
        if found:
            print(
                "sync_chart_files: the chart's copies differ from policies/ and "
                "deploy/prometheus/; run `.venv/bin/python scripts/sync_chart_files.py` and "
                "commit deploy/helm/liaison/files/",
                file=sys.stderr,
            )
            return 1
        return 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
