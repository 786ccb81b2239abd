# Unit tests for the `bilateral` profile: the agreement decides.
package liaison.profiles.bilateral_test

match(patch) := data.liaison.testing.match("bilateral", patch)

fetch(patch) := data.liaison.testing.fetch("bilateral", patch)

person := {"request": {"category": "wanted_person"}, "record": {"category": "wanted_person"}}

test_match_allowed if match({}) == {"allow": true, "reasons": [], "obligations": {"max_results": 5}}

test_match_any_agreed_purpose_and_category if {
	match({"envelope": {"purpose": "missing_person_search"}, "request": {"category": "vehicle"}}).allow == true
}

test_match_person_needs_no_approval if match(person).obligations == {"max_results": 5}

test_fetch_allowed if {
	fetch({}) == {"allow": true, "reasons": [], "obligations": {
		"handling_code": "H0",
		"redact": [],
		"require_approval": false,
		"retention_days": 30,
	}}
}

test_fetch_person_redacts_only_what_the_agreement_says if {
	d := fetch(person)
	d.allow == true
	d.obligations.redact == ["informant", "surveillance_notes"]
	d.obligations.require_approval == false
}

test_fetch_approval_category_deadline_from_agreement if {
	fr := data.liaison.testing.agreements["FR-DGPN"]
	d := data.liaison.testing.decide_data(
		object.union(object.union(data.liaison.testing.fetch_input, {"request": {"category": "firearm"}}), {"record": {"category": "firearm"}}),
		data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"approval_deadline_hours": 120})),
	)
	d.obligations == {
		"approval_deadline_hours": 120,
		"handling_code": "H0",
		"redact": [],
		"require_approval": true,
		"retention_days": 30,
	}
}

test_fetch_reasons_from_every_rule if {
	d := fetch({
		"requester": {"status": "suspended"},
		"envelope": {"legal_basis": "none"},
		"record": {"handling_code": "H2", "origin_country": "NL", "source_restrictions": ["FR"]},
	})
	d.reasons == ["handling_code_forbids_resharing", "legal_basis_insufficient", "requester_not_active", "source_restricted", "source_restriction_forbids_resharing"]
}

# The demo federation's agreement (node/local/demo.py): Match only, legal basis `none` allowed.
test_demo_agreement_match if {
	demo := {
		"categories": ["travel_document", "vehicle", "wanted_person"],
		"purposes": ["criminal_investigation", "border_control"],
		"methods": ["Match"],
		"legal_bases": ["none", "bilateral_agreement"],
		"valid_from": "2025-01-01",
		"valid_until": "2027-12-31",
	}
	d := data.liaison.testing.decide_data(data.liaison.testing.match_input, {"agreements": {"FR-DGPN": demo}})
	d == {"allow": true, "reasons": [], "obligations": {"max_results": 10}}
}
