# Unit tests for notice.rego: receiving a notice (PublishNotice) under each profile.
package liaison.base.notice_test

fr := data.liaison.testing.agreements["FR-DGPN"]

notice_input := object.union(data.liaison.testing.match_input, {
	"request": {"method": "PublishNotice"},
	"notice": {"handling_code": "H1", "addressed_to": "named"},
})

# FR-DGPN's fixture agreement, naming PublishNotice too, with `patch` merged in.
agreement(patch) := object.union(object.union(fr, {"methods": ["Match", "Fetch", "PublishNotice"]}), patch)

# A PublishNotice under `profile`, the agreement `patched`, the input `patch`ed.
notice(profile, patched, patch) := data.liaison.testing.decide_data(
	object.union(object.union(notice_input, {"node": {"profile": profile}}), patch),
	data.liaison.testing.with_agreement("FR-DGPN", agreement(patched)),
)

allowed(d) if {
	d.allow == true
	d.reasons == []
	d.obligations == {"retention_days": 30}
}

test_accepted_under_every_profile if {
	every profile in ["bilateral", "eu-led", "strict"] {
		allowed(notice(profile, {}, {}))
	}
}

test_the_agreement_must_name_the_method if {
	d := data.liaison.testing.decide(object.union(notice_input, {}))
	data.liaison.testing.denied(d, ["method_not_permitted"])
}

test_the_agreement_must_name_the_category if {
	d := notice("bilateral", {"categories": ["vehicle"]}, {})
	data.liaison.testing.denied(d, ["category_not_agreed"])
}

test_no_agreement_says_only_that if {
	d := notice("bilateral", {}, {"requester": {"node_id": "XX-NOBODY"}})
	data.liaison.testing.denied(d, ["no_agreement"])
}

test_h3_is_refused_unless_the_agreement_takes_it if {
	data.liaison.testing.denied(notice("bilateral", {}, {"notice": {"handling_code": "H3"}}), ["handling_code_not_accepted"])
	allowed(notice("bilateral", {"notice_handling_codes": ["H3"]}, {"notice": {"handling_code": "H3"}}))
}

test_the_agreement_list_replaces_the_default if {
	d := notice("strict", {"notice_handling_codes": ["H1"]}, {"notice": {"handling_code": "H0"}})
	data.liaison.testing.denied(d, ["handling_code_not_accepted"])
	allowed(notice("strict", {"notice_handling_codes": ["H1"]}, {}))
}

test_an_unknown_handling_code_is_named if {
	data.liaison.testing.denied(notice("bilateral", {}, {"notice": {"handling_code": "H9"}}), ["handling_code_unknown"])
	data.liaison.testing.denied(notice("eu-led", {}, {"notice": {"handling_code": 3}}), ["handling_code_unknown"])
}

test_a_notice_without_its_facts_is_refused if {
	inp := object.union(object.remove(notice_input, ["notice"]), {"node": {"profile": "bilateral"}})
	d := data.liaison.testing.decide_data(inp, data.liaison.testing.with_agreement("FR-DGPN", agreement({})))
	data.liaison.testing.denied(d, ["notice_missing"])
}

test_a_malformed_list_of_codes_is_invalid_data if {
	d := notice("bilateral", {"notice_handling_codes": "H1"}, {})
	data.liaison.testing.denied(d, ["policy_data_invalid"])
}

test_eu_led_holds_the_purpose_to_the_category if {
	patch := {"request": {"category": "missing_person"}, "envelope": {"purpose": "crime_prevention"}}
	d := notice("eu-led", {"categories": ["missing_person"], "purposes": ["crime_prevention"]}, patch)
	data.liaison.testing.denied(d, ["purpose_incompatible_with_category"])
}

test_notice_rules_never_touch_a_match if {
	d := data.liaison.testing.match("bilateral", {"notice": {"handling_code": "H9"}})
	d.allow == true
}
