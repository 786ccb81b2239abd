#!/usr/bin/env bash
# Set up everything Liaison needs on a fresh machine: a virtualenv with the pinned Python
# packages, the pinned Go-built tools (OPA, buf, Helm) and checkov in a virtualenv of its
# own (all versions live in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "setup: Liaison needs Python 3.11 as \$PYTHON or python3" >&2
  exit 2
fi
# The pinned Go-built tools (name, module@version) and the Go they need, from pyproject.toml.
tools_dir=${LIAISON_TOOLS:-$HOME/.cache/liaison-tools}
tools=$("$PYTHON" - <<'PY'
import tomllib
tools = tomllib.load(open("pyproject.toml", "rb"))["tool"]["liaison"]["tools"]
for name, module in tools.items():
    print(name, module)
PY
)
go_min=$("$PYTHON" -c \
  'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["liaison"]["go"])')
# Go is needed only to build a tool that is not cached yet; check it before anything else
# is installed, so that an old Go fails in the first second with what to do.
missing_tools=$(while read -r name module; do
  [ -x "$tools_dir/$name/${module##*@}/$name" ] || echo "$name"
done <<<"$tools")
if [ -n "$missing_tools" ]; then
  if ! command -v go >/dev/null; then
    echo "setup: building $(echo $missing_tools) needs Go $go_min or later (https://go.dev/dl);" \
      "none is on PATH ($PATH)" >&2
    exit 2
  fi
  go_version=$(go env GOVERSION 2>/dev/null || true) # e.g. go1.26.8
  go_version=${go_version#go}
  if [ -z "$go_version" ] ||
    [ "$(printf '%s\n%s\n' "$go_min" "$go_version" | sort -V | head -n 1)" != "$go_min" ]; then
    echo "setup: OPA, buf and Helm at the versions pinned in pyproject.toml need Go $go_min or" \
      "later; $(command -v go) is ${go_version:-of unknown version}. Install a newer Go" \
      "(https://go.dev/dl) and put it first on PATH." >&2
    exit 2
  fi
fi

# Debian packages: promtool (from `prometheus`) checks the alerting rules; `postgresql`
# gives the server binaries (initdb, pg_ctl) that scripts/postgres.sh runs a throwaway test
# cluster with (Debian keeps them in /usr/lib/postgresql/<major>/bin); and Debian's Python
# leaves out ensurepip, without which `python3 -m venv` fails: python3.11-venv restores it.
# `chromium` renders the compliance report in a real headless browser in its test.
need_apt=()
"$PYTHON" -c 'import ensurepip' 2>/dev/null || need_apt+=(python3.11-venv)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ -z "${PG_BIN:-}" ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null &&
  ! { command -v initdb >/dev/null && command -v pg_ctl >/dev/null; }; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: install ${need_apt[*]} with your package manager (promtool, the" \
      "PostgreSQL server binaries, Python's venv and chromium are needed; PG_BIN may name" \
      "the PostgreSQL binaries' folder)" >&2
    exit 2
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    # Never prompt for a password (CI has no terminal): sudo -n, or say what to run.
    if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
      echo "setup: ${need_apt[*]} must be installed, which needs root; sudo cannot run" \
        "without a password here. Run this once, then make again:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends" \
        "${need_apt[*]}" >&2
      exit 2
    fi
    sudo="sudo -n"
  fi
  echo "setup: installing Debian package(s): ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" >/dev/null
fi

# The virtualenv; its pip is the mark of a finished one (a venv that failed halfway, e.g.
# for want of ensurepip, has a python but no pip, and is made again).
if [ ! -x .venv/bin/pip ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip_version=$(.venv/bin/python -c \
    'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["liaison"]["pip"])')
  .venv/bin/pip install --quiet --disable-pip-version-check "pip==$pip_version"
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

# Go-built tools, each cached under ~/.cache/liaison-tools/<name>/<version>/.
mkdir -p .venv/tools
while read -r name module; do
  version=${module##*@}
  target="$tools_dir/$name/$version"
  if [ ! -x "$target/$name" ]; then
    echo "setup: building $module (once; cached in $target)"
    GOBIN="$target" GOFLAGS=-mod=mod go install "$module"
  fi
  ln -sf "$target/$name" ".venv/tools/$name"
done <<<"$tools"

# checkov, in a virtualenv of its own (its dependencies clash with the pins above), cached
# under ~/.cache/liaison-tools/checkov/<version>/; `.complete` marks a finished install.
checkov_version=$(.venv/bin/python -c \
  'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["liaison"]["checkov"])')
checkov_home="$tools_dir/checkov/$checkov_version"
if [ ! -f "$checkov_home/.complete" ]; then
  echo "setup: installing checkov $checkov_version (once; cached in $checkov_home)"
  rm -rf "$checkov_home"
  "$PYTHON" -m venv "$checkov_home/venv"
  "$checkov_home/venv/bin/pip" install --quiet --disable-pip-version-check "pip==$(
    .venv/bin/python -c \
      'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["liaison"]["pip"])'
  )"
  "$checkov_home/venv/bin/pip" install --quiet --disable-pip-version-check \
    "checkov==$checkov_version"
  touch "$checkov_home/.complete"
fi
ln -sf "$checkov_home/venv/bin/checkov" .venv/tools/checkov
