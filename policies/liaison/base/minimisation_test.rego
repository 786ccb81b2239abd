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

# --- a joint investigation team shares without a ticket ------------------------------------

jit_fetch(profile, patch) := data.liaison.testing.fetch(profile, object.union(
	{"envelope": {"legal_basis": "jit", "case_reference": "JIT-2026-017"}},
	patch,
))

firearm := {"request": {"category": "firearm"}, "record": {"category": "firearm"}}

test_jit_waives_the_node_approval_category if {
	d := jit_fetch("bilateral", firearm)
	d.allow == true
	d.obligations.require_approval == false
	not "approval_deadline_hours" in object.keys(d.obligations)
}

test_jit_waives_the_profile_approval if {
	d := jit_fetch("eu-led", person)
	d.allow == true
	d.obligations.require_approval == false
	"health" in d.obligations.redact # redaction is not waived
}

test_jit_keeps_h3_with_a_person if {
	d := jit_fetch("bilateral", object.union(firearm, {"record": {"handling_code": "H3"}}))
	d.obligations.require_approval == true
	d.obligations.approval_deadline_hours == 72
}

# The same request under another basis still goes to a person.
test_other_bases_keep_the_approval if {
	fetch(firearm).obligations.require_approval == true
	data.liaison.testing.fetch("eu-led", person).obligations.require_approval == true
}

# A grant out of force or without the requester refuses the request: nothing is waived.
test_jit_out_of_force_refused_not_waived if {
	d := jit_fetch("bilateral", object.union(firearm, {"now": "2027-01-01T00:00:00Z"}))
	d.allow == false
	d.reasons == ["jit_not_in_force"]
}

test_jit_non_member_refused_not_waived if {
	d := data.liaison.testing.decide_data(
		object.union(data.liaison.testing.fetch_input, object.union(firearm, {"envelope": {"legal_basis": "jit", "case_reference": "JIT-2026-017"}})),
		object.union(object.remove(data.liaison.testing.policy_data, ["jits"]), {"jits": {"JIT-2026-017": object.union(
			data.liaison.testing.jits["JIT-2026-017"],
			{"members": ["DE", "NL"]},
		)}}),
	)
	d.allow == false
	d.reasons == ["jit_not_member"]
}
