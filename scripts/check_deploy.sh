#!/usr/bin/env bash
# The deployment checks of `make lint`: the Dockerfile's linter, the chart's copies of the
# policies and rule files, and the Helm chart rendered for each of its three value sets
# (deploy/helm/liaison/ci/), linted, validated against Kubernetes' schemas (the newest and
# the oldest version the chart supports) and scanned by checkov. checkov fails on any
# finding that the chart does not answer in writing (its checkov.io/skip annotations,
# templates/_helpers.tpl "liaison.checkovSkips").
set -euo pipefail
cd "$(dirname "$0")/.."

helm=.venv/tools/helm
chart=deploy/helm/liaison
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

set -x
.venv/bin/hadolint deploy/Dockerfile
.venv/bin/python scripts/sync_chart_files.py --check
for values in minimal production external-db; do
  "$helm" lint --strict --quiet "$chart" -f "$chart/ci/$values.yaml"
  "$helm" template liaison "$chart" --namespace liaison -f "$chart/ci/$values.yaml" \
    >"$out/$values.yaml"
done
# The monitoring.coreos.com kinds have no schema here (a warning, not a failure);
# tests/unit/test_helm_chart.py checks what they hold.
.venv/bin/kubernetes-validate --strict --quiet --no-warn "$out"/*.yaml
.venv/bin/kubernetes-validate --strict --quiet --no-warn -k 1.29.0 "$out"/*.yaml
.venv/tools/checkov --directory "$out" --framework kubernetes --quiet --compact \
  --skip-download
