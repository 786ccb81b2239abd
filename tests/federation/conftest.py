"""A real three-node federation on loopback: real processes, real mTLS, real certificates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from federation.client import ClientIdentity
from federation.pki import create_authority
from node.enrol import enrol_node
from node.local.demo import AGREEMENTS
from node.local.federation import Federation, build_federation


@pytest.fixture(scope="session")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federation")
    federation = build_federation(root, ("DE-BKA", "FR-DGPN", "NL-KLPD"), AGREEMENTS, records=300)
    federation.start()
    yield federation
    federation.stop()


@pytest.fixture(scope="session")
def stranger(fed: Federation) -> ClientIdentity:
    """Enrolled by the genuine authority, but never listed in the directory."""
    folder = fed.root / "BE-FPJ"
    enrol_node(
        fed.root / "authority",
        "BE-FPJ",
        folder,
        endpoint="127.0.0.1:1",
        hosts=("127.0.0.1",),
        metrics="",
        policy_dir=None,
    )
    return ClientIdentity.from_files(
        "BE-FPJ",
        "liaison.example",
        folder / "tls.crt",
        folder / "tls.key",
        folder / "ca.crt",
        folder / "signing.key",
    )


@pytest.fixture(scope="session")
def rogue(tmp_path_factory: pytest.TempPathFactory, fed: Federation) -> ClientIdentity:
    """A certificate for DE-BKA's very node id, issued by another CA."""
    root = tmp_path_factory.mktemp("rogue")
    create_authority(root / "authority", "liaison.example")
    enrol_node(
        root / "authority",
        "DE-BKA",
        root / "DE-BKA",
        endpoint="127.0.0.1:1",
        hosts=("127.0.0.1",),
        metrics="",
        policy_dir=None,
    )
    genuine_ca = (fed.nodes["DE-BKA"].folder / "ca.crt").read_bytes()
    return ClientIdentity(
        node_id="DE-BKA",
        federation="liaison.example",
        certificate=(root / "DE-BKA" / "tls.crt").read_bytes(),
        private_key=(root / "DE-BKA" / "tls.key").read_bytes(),
        ca=genuine_ca,
        signing_key=(root / "DE-BKA" / "signing.key").read_bytes(),
    )
