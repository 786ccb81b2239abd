"""`liaison policy check|test|explain` as an operator runs them (real OPA binary)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from node.enrol import DEFAULT_POLICY_DIR
from node.policy.opa_process import start_opa
from tests.federation.test_cli import liaison
from tests.unit.policy_examples import ALLOW_INPUT

EXAMPLE = DEFAULT_POLICY_DIR / "data" / "agreements.example.json"
# The example input of the engines' tests, for a purpose the example agreement lacks.
INPUT = {**ALLOW_INPUT, "envelope": {**ALLOW_INPUT["envelope"], "purpose": "counter_terrorism"}}


def _flags(policy_dir: Path = DEFAULT_POLICY_DIR, data: Path = EXAMPLE) -> list[str]:
    return ["--policy-dir", str(policy_dir), "--data", str(data)]


def test_check_passes_on_the_shipped_library() -> None:
    result = liaison("policy", "check", *_flags())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[  ok] opa check --strict" in result.stdout
    assert "[  ok] policy data" in result.stdout


def test_check_names_a_typo_in_the_data_and_a_broken_rego_file(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policies)
    data = json.loads(EXAMPLE.read_text())
    data["agreements"]["FR-DGPN"]["categories"] = ["travle_document"]
    (tmp_path / "data.json").write_text(json.dumps(data, indent=2))
    broken = policies / "liaison" / "base" / "agreement.rego"
    broken.write_text(broken.read_text() + "\nthis is not rego\n")
    result = liaison("policy", "check", *_flags(policies, tmp_path / "data.json"))
    assert result.returncode == 2
    assert "agreements.FR-DGPN.categories[0]" in result.stdout
    assert "travle_document" in result.stdout
    assert "[FAIL] compiles in the embedded engine" in result.stdout
    assert "agreement.rego" in result.stdout


def test_test_runs_opa_test_and_a_corpus_on_both_engines(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    for folder in ("data", "inputs", "cases"):
        (corpus / folder).mkdir(parents=True)
    shutil.copy(EXAMPLE, corpus / "data" / "example.json")
    (corpus / "inputs" / "match.json").write_text(json.dumps(INPUT))
    cases = [
        {
            "name": "purpose outside the agreement",
            "data": "example",
            "input": {"base": "match"},
            "expect": {"allow": False, "reasons": ["purpose_not_agreed"]},
            "explain": {"fired": ['data.liaison.base.agreement_reasons = ["purpose_not_agreed"]']},
        },
        {
            "name": "agreed purpose",
            "data": "example",
            "input": {"base": "match", "set": {"envelope.purpose": "border_control"}},
            "expect": {"allow": True, "obligations": {"max_results": 5}},
        },
    ]
    (corpus / "cases" / "few.json").write_text(json.dumps(cases))
    result = liaison(
        "policy",
        "test",
        "--policy-dir",
        str(DEFAULT_POLICY_DIR),
        "--data",
        str(EXAMPLE),
        "--corpus",
        str(corpus),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[  ok] opa test" in result.stdout
    assert "[  ok] conformance corpus on the embedded engine: 2/2" in result.stdout
    assert "[  ok] conformance corpus on the opa engine: 2/2" in result.stdout

    cases[1]["expect"] = {"allow": False}
    cases[0]["explain"] = {"not_fired": ["data.liaison.base.agreement_reasons"]}
    (corpus / "cases" / "few.json").write_text(json.dumps(cases))
    wrong = liaison("policy", "test", *_flags(), "--corpus", str(corpus), timeout=300)
    assert wrong.returncode == 2
    assert "agreed purpose (few.json[1]): allow is True, expected False" in wrong.stdout
    assert (
        "purpose outside the agreement (few.json[0]): explanation lists "
        'data.liaison.base.agreement_reasons = ["purpose_not_agreed"]' in wrong.stdout
    )


def test_explain_shows_reasons_and_what_fired_on_both_engines(tmp_path: Path) -> None:
    case = tmp_path / "case.json"
    case.write_text(json.dumps(INPUT))
    result = liaison("policy", "explain", *_flags(), "--input", str(case))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["engine"] == "embedded" and out["reasons"] == ["purpose_not_agreed"]
    assert 'data.liaison.base.agreement_reasons = ["purpose_not_agreed"]' in out["fired"]
    assert "data.liaison.exchange.decision.allow" not in out["fired"]
    embedded_fired = out["fired"]

    opa = start_opa()
    try:
        config = tmp_path / "node.toml"
        config.write_text(
            '[node]\nid = "DE-BKA"\nfederation = "liaison.example"\n[policy]\n'
            f'engine = "opa"\nopa_url = "{opa.url}"\npolicy_dir = "{DEFAULT_POLICY_DIR}"\n'
            f'data = "{EXAMPLE}"\n'
        )
        result = liaison("policy", "explain", "--config", str(config), "--input", str(case))
    finally:
        opa.stop()
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["engine"] == "opa" and out["reasons"] == ["purpose_not_agreed"]
    assert out["fired"] == embedded_fired
    assert out["explanation"], "OPA gave no explanation"


def test_explain_takes_an_input_of_any_shape(tmp_path: Path) -> None:
    """An odd input is what explain is for: it is decided (denied) and explained, no crash."""
    case = tmp_path / "case.json"
    for odd, reasons in (
        ({**INPUT, "node": []}, ["unknown_profile"]),
        (["not", "an", "object"], ["unknown_profile", "unsupported_input_version"]),
    ):
        case.write_text(json.dumps(odd))
        result = liaison("policy", "explain", *_flags(), "--input", str(case))
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert (out["allow"], out["reasons"]) == (False, reasons)
        assert f"data.liaison.exchange.reasons = {json.dumps(reasons)}" in out["fired"]
