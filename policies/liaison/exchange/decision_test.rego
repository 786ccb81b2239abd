# Unit tests for decision.rego, the entry point: dispatch, unknown profiles, and a
# well-formed object for every input.
package liaison.exchange_test

well_formed(d) if {
	is_boolean(d.allow)
	is_array(d.reasons)
	is_object(d.obligations)
}

test_dispatch_bilateral if data.liaison.testing.fetch("bilateral", {}).obligations.redact == []

test_dispatch_eu_led if {
	d := data.liaison.testing.fetch("eu-led", {})
	"health" in d.obligations.redact
}

test_dispatch_strict if {
	data.liaison.testing.denied(data.liaison.testing.fetch("strict", {}), ["fetch_not_permitted_by_profile"])
}

test_unknown_profile if data.liaison.testing.denied(data.liaison.testing.match("permissive", {}), ["unknown_profile"])

test_profile_in_wrong_case if data.liaison.testing.denied(data.liaison.testing.match("EU-LED", {}), ["unknown_profile"])

test_profile_underscore_spelling if data.liaison.testing.denied(data.liaison.testing.match("eu_led", {}), ["unknown_profile"])

test_profile_not_a_string if data.liaison.testing.denied(data.liaison.testing.match(["bilateral"], {}), ["unknown_profile"])

test_profile_missing if {
	inp := data.liaison.testing.without(data.liaison.testing.match_input, ["node"], "profile")
	data.liaison.testing.denied(data.liaison.testing.decide(inp), ["unknown_profile"])
}

test_empty_input_is_a_well_formed_deny if {
	d := data.liaison.exchange.decision with input as {}
	data.liaison.testing.denied(d, ["unknown_profile", "unsupported_input_version"])
}

test_empty_input_every_profile if {
	every profile in ["bilateral", "eu-led", "strict"] {
		d := data.liaison.exchange.decision with input as {"node": {"profile": profile}}
		d.allow == false
		d.reasons == ["method_unknown", "no_agreement", "purpose_missing", "requester_not_active", "unsupported_input_version"]
		d.obligations == {}
	}
}

test_input_not_an_object if {
	d := data.liaison.exchange.decision with input as "Match"
	data.liaison.testing.denied(d, ["unknown_profile", "unsupported_input_version"])
}

test_no_data_at_all if {
	d := data.liaison.exchange.decision with input as data.liaison.testing.match_input
	data.liaison.testing.denied(d, ["no_agreement"])
}

test_decision_is_well_formed_for_odd_inputs if {
	every inp in [
		{},
		{"node": {"profile": "bilateral"}, "request": {"method": "Fetch"}},
		{"node": {"profile": "eu-led"}, "request": {"method": "Fetch"}, "record": {}},
		{"node": {"profile": "strict"}, "request": "Fetch"},
		{"node": "bilateral"},
	] {
		d := data.liaison.testing.decide(inp)
		well_formed(d)
		d.allow == false
	}
}

# --- the entry point re-checks the profile's answer ----------------------------------------

test_allow_passes_through if {
	d := data.liaison.exchange.decision with input as {"version": 1} with data.liaison.exchange.profile_decision as {"allow": true, "reasons": [], "obligations": {"max_results": 2}}
	d == {"allow": true, "reasons": [], "obligations": {"max_results": 2}}
}

test_allow_with_reasons_is_a_deny if {
	d := data.liaison.exchange.decision with input as {"version": 1} with data.liaison.exchange.profile_decision as {"allow": true, "reasons": ["x"], "obligations": {}}
	d == {"allow": false, "reasons": ["x"], "obligations": {}}
}

test_deny_without_reasons_is_a_policy_error if {
	d := data.liaison.exchange.decision with input as {"version": 1} with data.liaison.exchange.profile_decision as {"allow": false, "reasons": [], "obligations": {}}
	d == {"allow": false, "reasons": ["policy_error"], "obligations": {}}
}

test_malformed_profile_answer_is_a_policy_error if {
	d := data.liaison.exchange.decision with input as {"version": 1} with data.liaison.exchange.profile_decision as "yes"
	d == {"allow": false, "reasons": ["policy_error"], "obligations": {}}
}

test_allow_without_object_obligations_is_a_deny if {
	d := data.liaison.exchange.decision with input as {"version": 1} with data.liaison.exchange.profile_decision as {"allow": true, "reasons": [], "obligations": []}
	d.allow == false
}

test_wrong_version_is_named_even_if_the_profile_allows if {
	d := data.liaison.exchange.decision with input as {"version": 2} with data.liaison.exchange.profile_decision as {"allow": true, "reasons": [], "obligations": {"max_results": 2}}
	d == {"allow": false, "reasons": ["unsupported_input_version"], "obligations": {}}
}
