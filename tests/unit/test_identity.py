"""Node ids, federation names, SPIFFE URIs and the TLS name that binds a node to its cert."""

from __future__ import annotations

import pytest

from federation.identity import (
    InvalidIdentity,
    check_federation,
    check_node_id,
    country_of,
    node_from_spiffe,
    spiffe_uri,
    tls_name,
)


@pytest.mark.parametrize("node_id", ["DE-BKA", "FR-PN", "NL-KMAR", "GB-NCA123", "IE-" + "A" * 16])
def test_valid_node_ids_are_returned_unchanged(node_id: str) -> None:
    assert check_node_id(node_id) == node_id


@pytest.mark.parametrize(
    "node_id",
    [
        "",
        "de-bka",
        "DE-bka",
        "DEU-BKA",
        "D-BKA",
        "DE_BKA",
        "DE-B",
        "DE-" + "A" * 17,
        "DE-BKA ",
        " DE-BKA",
        "DE-BKA\n",
        "DE-BK/A",
        "DE--BKA",
    ],
)
def test_invalid_node_ids_are_refused_with_the_expected_form(node_id: str) -> None:
    with pytest.raises(InvalidIdentity, match=r"expected <ISO-3166 alpha-2>-<agency>") as info:
        check_node_id(node_id)
    assert repr(node_id) in str(info.value)


def test_invalid_identity_is_a_value_error() -> None:
    assert issubclass(InvalidIdentity, ValueError)


@pytest.mark.parametrize("name", ["liaison.example", "eu", "a", "x-1.example.org"])
def test_valid_federation_names(name: str) -> None:
    assert check_federation(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Liaison.example",
        "-lead.example",
        "trail.example-",
        "under_score",
        "a b",
        "liaison.example/",
        "x" * 64,
        "liaison.example\n",
    ],
)
def test_invalid_federation_names(name: str) -> None:
    with pytest.raises(InvalidIdentity, match="invalid federation name"):
        check_federation(name)


def test_country_of_takes_the_iso_prefix_and_checks_the_id() -> None:
    assert country_of("DE-BKA") == "DE"
    with pytest.raises(InvalidIdentity):
        country_of("bka")


def test_spiffe_uri_round_trips_through_node_from_spiffe() -> None:
    uri = spiffe_uri("liaison.example", "DE-BKA")
    assert uri == "spiffe://liaison.example/node/DE-BKA"
    assert node_from_spiffe(uri, "liaison.example") == "DE-BKA"


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://other.example/node/DE-BKA",
        "spiffe://liaison.example.evil/node/DE-BKA",
        "spiffe://liaison.example/workload/DE-BKA",
        "https://liaison.example/node/DE-BKA",
    ],
)
def test_node_from_spiffe_refuses_uris_of_another_federation_or_shape(uri: str) -> None:
    with pytest.raises(InvalidIdentity, match=r"is not a node of federation 'liaison\.example'"):
        node_from_spiffe(uri, "liaison.example")


@pytest.mark.parametrize("tail", ["de-bka", "DE-BKA/extra", "", "DE-BKA?x=1"])
def test_node_from_spiffe_checks_the_node_id_part(tail: str) -> None:
    with pytest.raises(InvalidIdentity, match="invalid node id"):
        node_from_spiffe(f"spiffe://liaison.example/node/{tail}", "liaison.example")


def test_tls_name_is_lower_case_under_the_federation() -> None:
    assert tls_name("liaison.example", "DE-BKA") == "de-bka.node.liaison.example"
    assert tls_name("liaison.example", "NL-KMAR") != tls_name("liaison.example", "DE-BKA")
