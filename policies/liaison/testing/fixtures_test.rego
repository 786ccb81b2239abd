# Shared fixtures for the policy unit tests (a `_test.rego` file, so never loaded by a node).
#
# Functions of other packages are called by their full `data.` path: regorus does not
# resolve a function through an import alias, and can mis-resolve rules through one.
package liaison.testing

agreements := {
	"FR-DGPN": {
		"categories": ["wanted_person", "missing_person", "travel_document", "vehicle", "firearm"],
		"purposes": ["criminal_investigation", "border_control", "missing_person_search", "crime_prevention"],
		"methods": ["Match", "Fetch"],
		"legal_bases": ["none", "bilateral_agreement", "mlat", "jit", "treaty"],
		"valid_from": "2025-01-01",
		"valid_until": "2027-12-31",
		"max_results": 5,
		"redact": {"wanted_person": ["informant", "surveillance_notes"]},
	},
	"NL-KLPD": {
		"categories": ["vehicle"],
		"purposes": ["criminal_investigation"],
		"methods": ["Match"],
		"legal_bases": ["none"],
		"valid_from": "2025-01-01",
		"valid_until": "2027-12-31",
	},
}

jits := {"JIT-2026-017": {
	"members": ["DE", "FR", "NL"],
	"case_reference": "JIT-2026-017",
	"valid_from": "2026-01-01",
	"valid_until": "2026-12-31",
}}

restrictions := {"blocked_countries": ["BY"], "approval_categories": ["firearm"]}

settings := {"max_match_results": 10, "retention_days": 30}

policy_data := {"agreements": agreements, "jits": jits, "restrictions": restrictions, "settings": settings}

match_input := {
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

fetch_input := object.union(match_input, {
	"envelope": {"legal_basis": "bilateral_agreement", "case_reference": "CASE-2026-0042"},
	"request": {"method": "Fetch"},
	"record": {
		"category": "travel_document",
		"handling_code": "H0",
		"source_restrictions": [],
		"origin_country": "DE",
	},
})

# The exchange decision for `inp` under policy data `d` (keys agreements, jits,
# restrictions, settings; a missing key is absent data).
decide_data(inp, d) := result if {
	result := data.liaison.exchange.decision with input as inp
		with data.agreements as object.get(d, "agreements", null)
		with data.jits as object.get(d, "jits", null)
		with data.restrictions as object.get(d, "restrictions", null)
		with data.settings as object.get(d, "settings", null)
}

decide(inp) := decide_data(inp, policy_data)

# The fixture policy data with the agreement of `peer` replaced (not merged) by `agreement`.
with_agreement(peer, agreement) := object.union(
	object.remove(policy_data, ["agreements"]),
	{"agreements": object.union(object.remove(agreements, [peer]), {peer: agreement})},
)

# A Match / Fetch under `profile`, with `patch` deep-merged into the fixture input.
match(profile, patch) := decide(object.union(object.union(match_input, {"node": {"profile": profile}}), patch))

fetch(profile, patch) := decide(object.union(object.union(fetch_input, {"node": {"profile": profile}}), patch))

# `input` with `key` of the object at `path` removed (e.g. path ["envelope"], key "purpose").
without(inp, path, key) := object.union(object.remove(inp, [path[0]]), {path[0]: object.remove(inp[path[0]], [key])}) if {
	count(path) == 1
}

denied(d, reasons) if {
	d.allow == false
	d.reasons == reasons
	d.obligations == {}
}
