"""Every `liaison` command the README's shell blocks show is one the CLI accepts.

The README is what a new agency, investigator or overseer copies from first; a flag renamed
in the CLI and not in the README fails them on their first command. Optional parts written
as `[--flag VALUE ...]` are checked as if given.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from node.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
SHELL_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def readme_commands() -> list[list[str]]:
    commands = []
    for block in SHELL_BLOCK.findall(README.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
            if words[:1] == ["liaison"]:
                commands.append([w for w in words[1:] if w != "..."])
    return commands


def test_the_readme_shows_the_commands_of_every_user() -> None:
    shown = {tuple(c[:2]) for c in readme_commands()}
    for expected in [("query", "match"), ("query", "fetch"), ("tickets", "approve"),
                     ("oversight", "indicators"), ("serve", "--config")]:  # fmt: skip
        assert expected in shown, expected


def test_every_liaison_command_in_the_readme_parses() -> None:
    parser = build_parser()
    for command in readme_commands():
        try:
            args = parser.parse_args(command)
        except SystemExit:
            raise AssertionError(
                f"the CLI refuses the README's: liaison {shlex.join(command)}"
            ) from None
        assert callable(args.run), command
