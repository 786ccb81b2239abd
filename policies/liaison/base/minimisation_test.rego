# Unit tests for minimisation.rego: redaction, approval, and the obligations' shape.
package liaison.base.minimisation_test

fetch(patch) := data.liaison.testing.fetch("bilateral", patch)

person := {"request": {"category": "wanted_person"}, "record": {"category": "wanted_person"}}

test_fetch_obligations_complete if {
	fetch({}).obligations == {
		"handling_code": "H0",
		"redact": [],
		"require_approval": false,
		"retention_days": 30,
	}
}

test_agreement_redact_applies_to_its_category if {
	fetch(person).obligations.redact == ["informant", "surveillance_notes"]
}

test_agreement_redact_skips_non_strings if {
	fr := data.liaison.testing.agreements["FR-DGPN"]
	d := data.liaison.testing.decide_data(
		object.union(data.liaison.testing.fetch_input, person),
		data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"redact": {"wanted_person": ["health", 7]}})),
	)
	d.obligations.redact == ["health"]
}

test_approval_category_of_node if {
	d := fetch({"request": {"category": "firearm"}, "record": {"category": "firearm"}})
	d.allow == true
	d.obligations.require_approval == true
}

test_approval_carries_its_deadline if {
	fetch({"record": {"handling_code": "H3"}}).obligations == {
		"approval_deadline_hours": 72,
		"handling_code": "H3",
		"redact": [],
		"require_approval": true,
		"retention_days": 30,
	}
}

test_no_approval_no_deadline if not "approval_deadline_hours" in object.keys(fetch({}).obligations)

test_approval_categories_absent if {
	inp := object.union(data.liaison.testing.fetch_input, {"request": {"category": "firearm"}, "record": {"category": "firearm"}})
	d := data.liaison.testing.decide_data(inp, object.remove(data.liaison.testing.policy_data, ["restrictions"]))
	d.obligations.require_approval == false
}

test_special_category_fields_cover_article_10 if {
	count(data.liaison.base.special_category_fields) == 10
	"health" in data.liaison.base.special_category_fields
	"biometrics" in data.liaison.base.special_category_fields
}
