# Unit tests for the `strict` profile: hit/no-hit only.
package liaison.profiles.strict_test

match(patch) := data.liaison.testing.match("strict", patch)

fetch(patch) := data.liaison.testing.fetch("strict", patch)

test_match_allowed if match({}) == {"allow": true, "reasons": [], "obligations": {"max_results": 5}}

test_match_refused_as_agreed if {
	data.liaison.testing.denied(match({"envelope": {"purpose": "counter_terrorism"}}), ["purpose_not_agreed"])
}

test_fetch_refused if data.liaison.testing.denied(fetch({}), ["fetch_not_permitted_by_profile"])

test_fetch_refused_whatever_the_basis if {
	d := fetch({"envelope": {"legal_basis": "mlat", "has_legal_reference": true}})
	data.liaison.testing.denied(d, ["fetch_not_permitted_by_profile"])
}

test_fetch_refused_with_other_reasons if {
	d := fetch({"requester": {"status": "suspended"}})
	d.reasons == ["fetch_not_permitted_by_profile", "requester_not_active"]
}

test_unknown_method_refused if {
	d := match({"request": {"method": "Delete"}})
	d.reasons == ["method_not_permitted", "method_unknown"]
}
