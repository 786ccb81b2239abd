"""What the docs and the code's comments point a reader at must exist in this repository.

A newcomer follows the README into docs/ and from a docstring to the file it names; a path
left behind by a move, or a design note that lives outside the repository, is a dead end.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = (
    "node",
    "federation",
    "policies",
    "deploy",
    "proto",
    "tests",
    "benchmarks",
    "scripts",
    "docs",
)
# A repository path as prose writes it: a top-level folder, then /-separated parts, ending in
# a file with an extension or a folder with a trailing slash.
PATH = re.compile(
    r"(?<![\w./-])((?:" + "|".join(TOP) + r")/(?:[\w.*<>-]+/)*(?:[\w<>-]+(?:\.\w+)+|[\w-]+/)?)"
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
OUTSIDE = re.compile(r"\b(DESIGN|STYLE)\.md\b")


def tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def prose_files() -> list[Path]:
    """Markdown, Python, Rego, YAML and shell: everything a person reads, generated code aside."""
    suffixes = {".md", ".py", ".rego", ".yml", ".yaml", ".sh", ".toml", ".proto"}
    return [
        p
        for p in tracked()
        if (p.suffix in suffixes or p.name in {"Makefile", "run"})
        and "wire" not in p.relative_to(ROOT).parts
        and p.name != Path(__file__).name
    ]


def cited_paths(text: str) -> set[str]:
    return {m.group(1) for m in PATH.finditer(text) if not any(c in m.group(1) for c in "*<>")}


def test_no_file_cites_a_note_outside_the_repository() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in prose_files()
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == [], "cite files of this repository instead: " + ", ".join(offenders)


def test_every_repository_path_named_in_docs_and_code_exists() -> None:
    missing = sorted(
        f"{p.relative_to(ROOT)} names {cited}"
        for p in prose_files()
        for cited in cited_paths(p.read_text(errors="replace"))
        if not (ROOT / cited).exists()
    )
    assert missing == [], "\n".join(missing)


def test_every_relative_link_in_the_docs_resolves() -> None:
    docs = [p for p in tracked() if p.suffix == ".md"]
    broken = sorted(
        f"{p.relative_to(ROOT)} -> {target}"
        for p in docs
        for target in LINK.findall(p.read_text())
        if "://" not in target
        and not target.startswith("mailto:")
        and not (p.parent / target).exists()
    )
    assert broken == [], "\n".join(broken)


def test_the_path_finder_finds_what_prose_writes() -> None:
    text = "see `node/audit/log.py`, [ops](docs/operating.md), deploy/prometheus/ and node.audit"
    assert cited_paths(text) == {"node/audit/log.py", "docs/operating.md", "deploy/prometheus/"}
