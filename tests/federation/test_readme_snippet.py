"""The README's Python example for a peer's developer runs as written against real nodes.

It is copied first by whoever writes a client; run from a folder where `de-bka/` is an
enrolled node's folder (as `liaison node enroll --out de-bka` leaves it, with the signed
directory beside the keys), it must ask every peer and print one line for each.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from node.local.federation import Federation

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_fanout_example_asks_every_peer(fed: Federation, tmp_path: Path) -> None:
    (snippet,) = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    (tmp_path / "de-bka").symlink_to(fed.nodes["DE-BKA"].folder)
    ran = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    lines = sorted(ran.stdout.splitlines())
    peers = sorted(p for p in fed.nodes if p != "DE-BKA")
    assert [line.split()[0] for line in lines] == peers, ran.stdout
    # Each peer answered (no-hit for a number nobody holds, or refused by its policy).
    assert all(line.split()[1] in ("no-hit", "refused") for line in lines), ran.stdout
