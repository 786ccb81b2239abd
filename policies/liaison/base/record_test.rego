# Unit tests for record.rego: handling codes, re-sharing and source restrictions.
package liaison.base.record_test

fetch(patch) := data.liaison.testing.fetch("bilateral", patch)

only(patch, reason) if data.liaison.testing.denied(fetch(patch), [reason])

reshared := {"record": {"origin_country": "NL"}}

test_h0_allowed_and_marked if fetch({}).obligations.handling_code == "H0"

test_h1_allowed_and_marked if {
	d := fetch({"record": {"handling_code": "H1"}})
	d.allow == true
	d.obligations.handling_code == "H1"
	d.obligations.require_approval == false
}

test_h1_reshared_allowed if fetch(object.union(reshared, {"record": {"handling_code": "H1"}})).allow == true

test_h2_own_record_allowed if {
	d := fetch({"record": {"handling_code": "H2"}})
	d.allow == true
	d.obligations.handling_code == "H2"
}

test_h2_reshared_refused if only(object.union(reshared, {"record": {"handling_code": "H2"}}), "handling_code_forbids_resharing")

test_h2_without_origin_counts_as_reshared if {
	inp := data.liaison.testing.without(
		object.union(data.liaison.testing.fetch_input, {"record": {"handling_code": "H2"}}),
		["record"], "origin_country",
	)
	data.liaison.testing.denied(data.liaison.testing.decide(inp), ["handling_code_forbids_resharing"])
}

test_h3_requires_approval if {
	d := fetch({"record": {"handling_code": "H3"}})
	d.allow == true
	d.obligations.handling_code == "H3"
	d.obligations.require_approval == true
}

test_unknown_handling_code if only({"record": {"handling_code": "H9"}}, "handling_code_unknown")

test_missing_handling_code if {
	inp := data.liaison.testing.without(data.liaison.testing.fetch_input, ["record"], "handling_code")
	data.liaison.testing.denied(data.liaison.testing.decide(inp), ["handling_code_unknown"])
}

test_source_restricted if only({"record": {"source_restrictions": ["US", "FR"]}}, "source_restricted")

test_source_restricted_when_reshared if {
	d := fetch(object.union(reshared, {"record": {"source_restrictions": ["FR"]}}))
	data.liaison.testing.denied(d, ["source_restricted", "source_restriction_forbids_resharing"])
}

test_reshared_with_any_source_restriction_refused if {
	only(object.union(reshared, {"record": {"source_restrictions": ["US"]}}), "source_restriction_forbids_resharing")
}

test_reshared_without_origin_and_restricted_refused if {
	inp := data.liaison.testing.without(
		object.union(data.liaison.testing.fetch_input, {"record": {"source_restrictions": ["US"]}}),
		["record"], "origin_country",
	)
	data.liaison.testing.denied(data.liaison.testing.decide(inp), ["source_restriction_forbids_resharing"])
}

test_reshared_h2_with_restriction_gives_both_reasons if {
	d := fetch(object.union(reshared, {"record": {"handling_code": "H2", "source_restrictions": ["US"]}}))
	data.liaison.testing.denied(d, ["handling_code_forbids_resharing", "source_restriction_forbids_resharing"])
}

test_reshared_with_empty_restrictions_allowed if {
	fetch(object.union(reshared, {"record": {"source_restrictions": []}})).allow == true
}

test_own_record_restricted_for_others_allowed if {
	fetch({"record": {"source_restrictions": ["US"], "origin_country": "DE"}}).allow == true
}

test_source_restriction_for_others if fetch({"record": {"source_restrictions": ["US"]}}).allow == true

test_source_restrictions_absent if {
	inp := data.liaison.testing.without(data.liaison.testing.fetch_input, ["record"], "source_restrictions")
	data.liaison.testing.decide(inp).allow == true
}

test_source_restrictions_not_a_list if only({"record": {"source_restrictions": "FR"}}, "source_restrictions_invalid")

test_record_missing if {
	d := data.liaison.testing.decide(object.remove(object.union(data.liaison.testing.fetch_input, {"node": {"profile": "bilateral"}}), ["record"]))
	data.liaison.testing.denied(d, ["record_missing"])
}

test_record_not_an_object if only({"record": "H0"}, "record_missing")

test_record_category_mismatch if only({"record": {"category": "vehicle"}}, "record_category_mismatch")

test_match_ignores_record if {
	d := data.liaison.testing.match("bilateral", {"record": {"handling_code": "H2", "origin_country": "NL", "source_restrictions": ["FR"]}})
	d.allow == true
}
