# Unit tests for request.rego: membership, the clock and the small helpers.
package liaison.base.request_test

match(patch) := data.liaison.testing.match("bilateral", patch)

only(patch, reason) if data.liaison.testing.denied(match(patch), [reason])

test_active_requester_allowed if match({}).allow == true

test_unsupported_input_version if only({"version": 2}, "unsupported_input_version")

test_input_version_as_string if only({"version": "1"}, "unsupported_input_version")

test_requester_suspended if only({"requester": {"status": "suspended"}}, "requester_not_active")

test_requester_revoked if only({"requester": {"status": "revoked"}}, "requester_not_active")

test_missing_status if {
	inp := data.liaison.testing.without(data.liaison.testing.match_input, ["requester"], "status")
	data.liaison.testing.denied(data.liaison.testing.decide(inp), ["requester_not_active"])
}

test_requester_country_missing if {
	inp := data.liaison.testing.without(data.liaison.testing.match_input, ["requester"], "country")
	data.liaison.testing.denied(data.liaison.testing.decide(inp), ["requester_country_missing"])
}

test_requester_country_not_needed_for_a_plain_match if {
	inp := data.liaison.testing.without(data.liaison.testing.match_input, ["requester"], "country")
	d := data.liaison.testing.decide_data(inp, object.remove(data.liaison.testing.policy_data, ["restrictions"]))
	d.allow == true
}

test_requester_country_needed_for_fetch if {
	inp := data.liaison.testing.without(data.liaison.testing.fetch_input, ["requester"], "country")
	d := data.liaison.testing.decide_data(inp, object.remove(data.liaison.testing.policy_data, ["restrictions"]))
	data.liaison.testing.denied(d, ["requester_country_missing"])
}

test_requester_country_empty if only({"requester": {"country": ""}}, "requester_country_missing")

test_requester_country_not_a_string if only({"requester": {"country": ["FR"]}}, "requester_country_missing")

test_country_blocked if only({"requester": {"country": "BY"}}, "country_blocked")

test_blocked_list_absent_blocks_nobody if {
	d := data.liaison.testing.decide_data(
		data.liaison.testing.match_input,
		object.remove(data.liaison.testing.policy_data, ["restrictions"]),
	)
	d.allow == true
}

test_method_unknown if {
	d := match({"request": {"method": "Delete"}})
	d.reasons == ["method_not_permitted", "method_unknown"]
}

test_method_missing if {
	inp := data.liaison.testing.without(data.liaison.testing.match_input, ["request"], "method")
	d := data.liaison.testing.decide(inp)
	d.reasons == ["method_not_permitted", "method_unknown"]
}

# --- the clock ------------------------------------------------------------------------------

test_now_missing_is_never_in_force if {
	d := data.liaison.testing.decide(object.remove(data.liaison.testing.match_input, ["now"]))
	d.reasons == ["agreement_not_in_force"]
}

test_now_not_rfc3339 if only({"now": "2026"}, "agreement_not_in_force")

test_now_not_a_string if only({"now": 1764423912}, "agreement_not_in_force")

test_today_is_the_date_part if {
	data.liaison.base.today == "2026-11-29" with input as {"now": "2026-11-29T23:59:59Z"}
}

# --- helpers --------------------------------------------------------------------------------

test_positive_integer if {
	data.liaison.base.positive_integer(1)
	data.liaison.base.positive_integer(5.0)
	not data.liaison.base.positive_integer(0)
	not data.liaison.base.positive_integer(-3)
	not data.liaison.base.positive_integer(2.5)
	not data.liaison.base.positive_integer("5")
}

test_member_of_needs_a_list if {
	data.liaison.base.member_of("FR", ["DE", "FR"])
	not data.liaison.base.member_of("FR", "FR")
	not data.liaison.base.member_of("FR", {"x": "FR"})
	not data.liaison.base.member_of("FR", null)
}

test_iso_date if {
	data.liaison.base.iso_date("2026-01-31")
	not data.liaison.base.iso_date("2026-01-31T00:00:00Z")
	not data.liaison.base.iso_date("")
	not data.liaison.base.iso_date(20260131)
}
