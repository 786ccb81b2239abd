# Unit tests for decision.rego: `opa test policies/` or node.policy.rego_tests.
package liaison.exchange_test

import data.liaison.exchange

agreements := {"FR-DGPN": {
	"categories": ["travel_document", "vehicle"],
	"purposes": ["criminal_investigation", "border_control"],
	"methods": ["Match"],
	"legal_bases": ["none", "bilateral_agreement"],
	"valid_from": "2025-01-01",
	"valid_until": "2027-12-31",
	"max_results": 5,
}}

settings := {"max_match_results": 10}

base := {
	"version": 1,
	"now": "2026-11-29T13:45:12Z",
	"node": {"node_id": "DE-BKA", "country": "DE", "profile": "bilateral"},
	"requester": {"node_id": "FR-DGPN", "country": "FR", "status": "active"},
	"envelope": {
		"purpose": "criminal_investigation",
		"legal_basis": "none",
		"has_legal_reference": false,
		"has_case_reference": true,
	},
	"request": {"method": "Match", "category": "travel_document", "identifier_kinds": ["document_number"]},
}

# The decision for `base` patched with `patch` (a deep merge), under the test agreements.
decide(patch) := d if {
	d := exchange.decision with input as object.union(base, patch) with data.agreements as agreements with data.settings as settings
}

denied_only_for(patch, reason) if {
	d := decide(patch)
	d.allow == false
	d.reasons == [reason]
	d.obligations == {}
}

# --- allow ---------------------------------------------------------------------------------

test_allow_with_agreement if {
	decide({}) == {"allow": true, "reasons": [], "obligations": {"max_results": 5}}
}

test_allow_other_agreed_values if {
	d := decide({
		"envelope": {"purpose": "border_control", "legal_basis": "bilateral_agreement"},
		"request": {"category": "vehicle"},
	})
	d.allow == true
}

# --- every reason ---------------------------------------------------------------------------

test_unsupported_input_version if denied_only_for({"version": 2}, "unsupported_input_version")

test_input_version_as_string if denied_only_for({"version": "1"}, "unsupported_input_version")

test_requester_suspended if denied_only_for({"requester": {"status": "suspended"}}, "requester_not_active")

test_requester_revoked if denied_only_for({"requester": {"status": "revoked"}}, "requester_not_active")

test_no_agreement if denied_only_for({"requester": {"node_id": "XX-NOBODY"}}, "no_agreement")

test_category_not_agreed if denied_only_for({"request": {"category": "firearm"}}, "category_not_agreed")

test_purpose_not_agreed if denied_only_for({"envelope": {"purpose": "tax_audit"}}, "purpose_not_agreed")

test_method_not_permitted if denied_only_for({"request": {"method": "Fetch"}}, "method_not_permitted")

test_legal_basis_not_agreed if denied_only_for({"envelope": {"legal_basis": "mlat"}}, "legal_basis_not_agreed")

test_purpose_empty if denied_only_for({"envelope": {"purpose": ""}}, "purpose_missing")

test_purpose_not_a_string if denied_only_for({"envelope": {"purpose": 7}}, "purpose_missing")

test_all_reasons_listed_sorted if {
	d := decide({
		"version": 2,
		"now": "2030-01-01T00:00:00Z",
		"requester": {"status": "suspended"},
		"envelope": {"purpose": "tax_audit", "legal_basis": "mlat"},
		"request": {"method": "Fetch", "category": "firearm"},
	})
	d.allow == false
	d.reasons == [
		"agreement_not_in_force",
		"category_not_agreed",
		"legal_basis_not_agreed",
		"method_not_permitted",
		"purpose_not_agreed",
		"requester_not_active",
		"unsupported_input_version",
	]
}

test_no_agreement_hides_agreement_reasons if {
	d := decide({"requester": {"node_id": "XX-NOBODY"}, "request": {"method": "Fetch"}})
	d.reasons == ["no_agreement"]
}

# --- validity window ------------------------------------------------------------------------

test_window_first_day if decide({"now": "2025-01-01T00:00:00Z"}).allow == true

test_window_last_day if decide({"now": "2027-12-31T23:59:59Z"}).allow == true

test_window_day_before if denied_only_for({"now": "2024-12-31T23:59:59Z"}, "agreement_not_in_force")

test_window_day_after if denied_only_for({"now": "2028-01-01T00:00:00Z"}, "agreement_not_in_force")

test_window_without_bounds_is_not_in_force if {
	d := exchange.decision with input as base with data.agreements as {"FR-DGPN": object.remove(agreements["FR-DGPN"], ["valid_until"])}
	d.reasons == ["agreement_not_in_force"]
}

# --- missing fields -------------------------------------------------------------------------

test_empty_input_is_a_well_formed_deny if {
	d := exchange.decision with input as {} with data.agreements as agreements
	d.allow == false
	d.reasons == ["no_agreement", "purpose_missing", "requester_not_active", "unsupported_input_version"]
	d.obligations == {}
}

test_missing_now if {
	d := exchange.decision with input as object.remove(base, ["now"]) with data.agreements as agreements
	d.reasons == ["agreement_not_in_force"]
}

test_missing_purpose if {
	envelope := object.remove(base.envelope, ["purpose"])
	d := exchange.decision with input as object.union(object.remove(base, ["envelope"]), {"envelope": envelope}) with data.agreements as agreements
	d.reasons == ["purpose_missing"]
}

test_missing_requester if {
	d := exchange.decision with input as object.remove(base, ["requester"]) with data.agreements as agreements
	d.reasons == ["no_agreement", "requester_not_active"]
}

test_missing_request if {
	d := exchange.decision with input as object.remove(base, ["request"]) with data.agreements as agreements
	d.reasons == ["category_not_agreed", "method_not_permitted"]
}

test_missing_status if {
	requester := object.remove(base.requester, ["status"])
	d := exchange.decision with input as object.union(object.remove(base, ["requester"]), {"requester": requester}) with data.agreements as agreements
	d.reasons == ["requester_not_active"]
}

test_no_agreements_data_at_all if {
	d := exchange.decision with input as base with data.agreements as {}
	d.reasons == ["no_agreement"]
}

# --- obligations ----------------------------------------------------------------------------

test_max_results_agreement_is_tighter if decide({}).obligations == {"max_results": 5}

test_max_results_setting_is_tighter if {
	d := exchange.decision with input as base with data.agreements as agreements with data.settings as {"max_match_results": 3}
	d.obligations == {"max_results": 3}
}

test_max_results_only_setting if {
	d := exchange.decision with input as base with data.agreements as {"FR-DGPN": object.remove(agreements["FR-DGPN"], ["max_results"])} with data.settings as {"max_match_results": 7}
	d.obligations == {"max_results": 7}
}

test_max_results_default if {
	d := exchange.decision with input as base with data.agreements as {"FR-DGPN": object.remove(agreements["FR-DGPN"], ["max_results"])} with data.settings as {}
	d.obligations == {"max_results": 10}
}

test_no_obligations_on_deny if decide({"version": 2}).obligations == {}
