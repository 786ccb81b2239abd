# Unit tests for the `eu-led` profile: purpose limitation, approval, redaction.
package liaison.profiles.eu_led_test

match(patch) := data.liaison.testing.match("eu-led", patch)

fetch(patch) := data.liaison.testing.fetch("eu-led", patch)

as_category(c) := {"request": {"category": c}, "record": {"category": c}}

special := [
	"biometrics",
	"ethnicity",
	"genetic_data",
	"health",
	"philosophical_beliefs",
	"political_opinion",
	"religion",
	"sex_life",
	"sexual_orientation",
	"trade_union_membership",
]

incompatible(patch) if data.liaison.testing.denied(match(patch), ["purpose_incompatible_with_category"])

# --- purpose limitation ---------------------------------------------------------------------

test_match_allowed if match({}) == {"allow": true, "reasons": [], "obligations": {"max_results": 5}}

test_missing_person_for_search if {
	match({"envelope": {"purpose": "missing_person_search"}, "request": {"category": "missing_person"}}).allow == true
}

test_missing_person_for_investigation if match(as_category("missing_person")).allow == true

test_missing_person_not_for_border_control if {
	incompatible({"envelope": {"purpose": "border_control"}, "request": {"category": "missing_person"}})
}

test_missing_person_not_for_crime_prevention if {
	incompatible({"envelope": {"purpose": "crime_prevention"}, "request": {"category": "missing_person"}})
}

test_wanted_person_not_for_crime_prevention if {
	incompatible({"envelope": {"purpose": "crime_prevention"}, "request": {"category": "wanted_person"}})
}

test_vehicle_not_for_missing_person_search if {
	incompatible({"envelope": {"purpose": "missing_person_search"}, "request": {"category": "vehicle"}})
}

test_agreed_is_not_enough_compatible_is_not_enough if {
	d := match({"envelope": {"purpose": "counter_terrorism"}})
	data.liaison.testing.denied(d, ["purpose_not_agreed"])
}

test_unknown_category_is_compatible_with_nothing if {
	d := match({"request": {"category": "spaceship"}})
	d.reasons == ["category_not_agreed", "purpose_incompatible_with_category"]
}

test_missing_purpose_is_one_reason if {
	d := match({"envelope": {"purpose": ""}})
	d.reasons == ["purpose_missing"]
}

test_compatibility_table_covers_every_category if {
	every c in ["wanted_person", "missing_person", "travel_document", "vehicle", "firearm"] {
		count(data.liaison.profiles.eu_led.compatible_purposes[c]) > 0
	}
}

# --- Fetch: approval and redaction ---------------------------------------------------------

test_fetch_travel_document if {
	fetch({}) == {"allow": true, "reasons": [], "obligations": {
		"handling_code": "H0",
		"redact": sort(array.concat(["holder_address", "holder_phone"], special)),
		"require_approval": false,
		"retention_days": 30,
	}}
}

test_fetch_wanted_person_needs_approval if {
	d := fetch(as_category("wanted_person"))
	d.allow == true
	d.obligations.require_approval == true
	d.obligations.redact == sort(array.concat(special, ["informant", "surveillance_notes"]))
}

test_fetch_missing_person_needs_approval if {
	d := fetch(object.union(as_category("missing_person"), {"envelope": {"purpose": "missing_person_search"}}))
	d.allow == true
	d.obligations.require_approval == true
	d.obligations.redact == special
}

test_fetch_vehicle_redacts_owner if {
	d := fetch(as_category("vehicle"))
	d.obligations.require_approval == false
	d.obligations.redact == sort(array.concat(special, ["keeper_address", "keeper_name", "owner_address", "owner_name"]))
}

test_fetch_firearm_node_approval if {
	d := fetch(as_category("firearm"))
	d.obligations.require_approval == true
	d.obligations.redact == sort(array.concat(special, ["holder_address", "holder_name"]))
}

test_fetch_approval_deadline_is_48_hours if {
	d := fetch(as_category("wanted_person"))
	d.obligations.approval_deadline_hours == 48
}

test_fetch_no_approval_no_deadline if not "approval_deadline_hours" in object.keys(fetch({}).obligations)

fr := data.liaison.testing.agreements["FR-DGPN"]

fetch_data(patch, d) := data.liaison.testing.decide_data(
	object.union(object.union(data.liaison.testing.fetch_input, {"node": {"profile": "eu-led"}}), patch),
	d,
)

test_fetch_deadline_never_longer_than_48_hours if {
	d := object.union(data.liaison.testing.policy_data, {"settings": {"approval_deadline_hours": 96}})
	fetch_data(as_category("wanted_person"), d).obligations.approval_deadline_hours == 48
}

test_fetch_deadline_shortened_by_the_agreement if {
	d := data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"approval_deadline_hours": 24}))
	fetch_data(as_category("wanted_person"), d).obligations.approval_deadline_hours == 24
}

test_fetch_deadline_shortened_by_settings if {
	d := object.union(data.liaison.testing.policy_data, {"settings": {"approval_deadline_hours": 12}})
	fetch_data(as_category("wanted_person"), d).obligations.approval_deadline_hours == 12
}

test_fetch_h3_needs_approval if fetch({"record": {"handling_code": "H3"}}).obligations.require_approval == true

test_fetch_keeps_base_rules if {
	d := fetch({"envelope": {"legal_basis": "none"}, "record": {"source_restrictions": ["FR"]}})
	d.reasons == ["legal_basis_insufficient", "source_restricted"]
}

test_fetch_incompatible_purpose if {
	d := fetch(object.union(as_category("missing_person"), {"envelope": {"purpose": "border_control"}}))
	data.liaison.testing.denied(d, ["purpose_incompatible_with_category"])
}

test_match_person_needs_no_approval if match(as_category("wanted_person")).obligations == {"max_results": 5}
