# Unit tests for verdict.rego: the three shapes a profile's decision can take.
package liaison.base.verdict_test

test_allow_with_obligations if {
	data.liaison.base.verdict(set(), {"max_results": 3}) == {"allow": true, "reasons": [], "obligations": {"max_results": 3}}
}

test_deny_sorts_reasons_and_drops_obligations if {
	d := data.liaison.base.verdict({"purpose_missing", "no_agreement"}, {"max_results": 3})
	d == {"allow": false, "reasons": ["no_agreement", "purpose_missing"], "obligations": {}}
}

test_no_reasons_but_no_obligations_is_a_deny if {
	data.liaison.base.verdict(set(), {}) == {"allow": false, "reasons": ["obligations_undefined"], "obligations": {}}
}
