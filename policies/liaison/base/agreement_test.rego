# Unit tests for agreement.rego: the peer's agreement, its window and its lists.
package liaison.base.agreement_test

match(patch) := data.liaison.testing.match("bilateral", patch)

only(patch, reason) if data.liaison.testing.denied(match(patch), [reason])

# The FR-DGPN fixture agreement with `patch` merged in (or keys removed).
under(agreement, inp) := data.liaison.testing.decide_data(
	inp,
	data.liaison.testing.with_agreement("FR-DGPN", agreement),
)

fr := data.liaison.testing.agreements["FR-DGPN"]

test_no_agreement if only({"requester": {"node_id": "XX-NOBODY"}}, "no_agreement")

test_no_agreement_hides_agreement_reasons if {
	d := match({"requester": {"node_id": "XX-NOBODY"}, "request": {"category": "spaceship"}})
	d.reasons == ["no_agreement"]
}

test_no_agreements_data_at_all if {
	d := data.liaison.testing.decide_data(data.liaison.testing.match_input, {})
	d.reasons == ["no_agreement"]
}

test_agreement_not_an_object if {
	d := data.liaison.testing.decide_data(data.liaison.testing.match_input, {"agreements": {"FR-DGPN": ["Match"]}})
	d.reasons == ["no_agreement"]
}

test_requester_without_node_id if {
	inp := data.liaison.testing.without(data.liaison.testing.match_input, ["requester"], "node_id")
	data.liaison.testing.decide(inp).reasons == ["no_agreement"]
}

test_category_not_agreed if {
	d := data.liaison.testing.match("bilateral", {"requester": {"node_id": "NL-KLPD", "country": "NL"}})
	data.liaison.testing.denied(d, ["category_not_agreed"])
}

test_purpose_not_agreed if only({"envelope": {"purpose": "counter_terrorism"}}, "purpose_not_agreed")

test_purpose_empty if only({"envelope": {"purpose": ""}}, "purpose_missing")

test_purpose_not_a_string if only({"envelope": {"purpose": 7}}, "purpose_missing")

test_purpose_missing if {
	inp := data.liaison.testing.without(data.liaison.testing.match_input, ["envelope"], "purpose")
	data.liaison.testing.decide(inp).reasons == ["purpose_missing"]
}

test_method_not_permitted if {
	d := data.liaison.testing.fetch("bilateral", {"requester": {"node_id": "NL-KLPD", "country": "NL"}, "request": {"category": "vehicle"}, "record": {"category": "vehicle"}})
	data.liaison.testing.denied(d, ["legal_basis_not_agreed", "method_not_permitted"])
}

test_legal_basis_not_agreed if {
	d := under(object.union(fr, {"legal_bases": ["mlat"]}), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["legal_basis_not_agreed"])
}

test_legal_basis_unknown if only({"envelope": {"legal_basis": "goodwill"}}, "legal_basis_not_agreed")

test_every_agreement_reason_sorted if {
	d := match({
		"now": "2030-01-01T00:00:00Z",
		"envelope": {"purpose": "counter_terrorism", "legal_basis": "goodwill"},
		"request": {"method": "Delete", "category": "spaceship"},
	})
	d.reasons == [
		"agreement_not_in_force",
		"category_not_agreed",
		"legal_basis_not_agreed",
		"method_not_permitted",
		"method_unknown",
		"purpose_not_agreed",
	]
}

# --- wrong types: a list that is not a list agrees to nothing -------------------------------

test_categories_not_a_list if {
	d := under(object.union(fr, {"categories": "travel_document"}), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["category_not_agreed"])
}

test_categories_as_object if {
	d := under(object.union(fr, {"categories": {"a": "travel_document"}}), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["category_not_agreed"])
}

test_purposes_missing_from_agreement if {
	d := under(object.remove(fr, ["purposes"]), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["purpose_not_agreed"])
}

test_methods_not_a_list if {
	d := under(object.union(fr, {"methods": "Match"}), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["method_not_permitted"])
}

test_legal_bases_null if {
	d := under(object.union(fr, {"legal_bases": null}), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["legal_basis_not_agreed"])
}

# --- the validity window (both bounds inclusive) -------------------------------------------

test_window_first_day if match({"now": "2025-01-01T00:00:00Z"}).allow == true

test_window_last_day if match({"now": "2027-12-31T23:59:59Z"}).allow == true

test_window_day_before if only({"now": "2024-12-31T23:59:59Z"}, "agreement_not_in_force")

test_window_day_after if only({"now": "2028-01-01T00:00:00Z"}, "agreement_not_in_force")

test_window_without_until if {
	d := under(object.remove(fr, ["valid_until"]), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["agreement_not_in_force"])
}

test_window_without_from if {
	d := under(object.remove(fr, ["valid_from"]), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["agreement_not_in_force"])
}

test_window_bound_not_a_date if {
	d := under(object.union(fr, {"valid_from": ""}), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["agreement_not_in_force"])
}

test_window_bound_with_time if {
	d := under(object.union(fr, {"valid_until": "2027-12-31T23:59:59Z"}), data.liaison.testing.match_input)
	data.liaison.testing.denied(d, ["agreement_not_in_force"])
}
