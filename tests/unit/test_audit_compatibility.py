"""An audit log written before the issue-10 restructuring still verifies with today's code.

`vectors/audit_v1/` holds FR-DGPN's log and checkpoints from a `liaison demo` run of commit
5c92b11 (the layout before node/audit/ existed), with the node's public key. Nodes built
before and after a change share one federation and overseers keep old exports, so a log a
node wrote yesterday must verify with the `liaison audit verify` an overseer runs today.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "vectors" / "audit_v1"
ORIGIN = "liaison.example/FR-DGPN/audit"


def verify(folder: Path) -> subprocess.CompletedProcess[str]:
    public_key = (VECTORS / "FR-DGPN.pub").read_text().strip()
    command = ["audit", "verify", "--log", str(folder / "audit.log"), "--workers", "1"]
    command += ["--public-key", public_key, "--origin", ORIGIN]
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_log_written_before_the_move_verifies_with_its_checkpoints() -> None:
    done = verify(VECTORS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "32 entries, the chain is intact from entry 0" in done.stdout
    assert "3 checkpoint(s) of liaison.example/FR-DGPN/audit verified" in done.stdout


def test_the_same_log_with_one_byte_changed_does_not(tmp_path: Path) -> None:
    for name in ("audit.log", "audit.log.checkpoints"):
        shutil.copy(VECTORS / name, tmp_path / name)
    log = tmp_path / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    lines[17] = lines[17].replace('"peer":"DE-BKA"', '"peer":"NL-KLPD"', 1)
    assert lines[17] != (VECTORS / "audit.log").read_text().splitlines(keepends=True)[17]
    log.write_text("".join(lines))
    done = verify(tmp_path)
    assert done.returncode != 0
    assert "BAD at entry 17: hash does not match its content" in done.stdout + done.stderr
