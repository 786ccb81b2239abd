# Unit tests for settings.rego: result caps, retention, and the shape of the policy data.
package liaison.base.settings_test

fr := data.liaison.testing.agreements["FR-DGPN"]

match_with(d) := data.liaison.testing.decide_data(data.liaison.testing.match_input, d)

fetch_with(d) := data.liaison.testing.decide_data(
	object.union(data.liaison.testing.fetch_input, {"node": {"profile": "bilateral"}}),
	d,
)

with_settings(settings) := object.union(object.remove(data.liaison.testing.policy_data, ["settings"]), {"settings": settings})

without_fr_cap := data.liaison.testing.with_agreement("FR-DGPN", object.remove(fr, ["max_results"]))

invalid(d) if data.liaison.testing.denied(d, ["policy_data_invalid"])

# --- max_results ----------------------------------------------------------------------------

test_max_results_agreement_is_tighter if match_with(data.liaison.testing.policy_data).obligations == {"max_results": 5}

test_max_results_setting_is_tighter if {
	match_with(with_settings({"max_match_results": 3})).obligations == {"max_results": 3}
}

test_max_results_only_setting if {
	d := object.union(object.remove(without_fr_cap, ["settings"]), {"settings": {"max_match_results": 7}})
	match_with(d).obligations == {"max_results": 7}
}

test_max_results_default if {
	match_with(object.remove(without_fr_cap, ["settings"])).obligations == {"max_results": 10}
}

test_max_results_zero_is_invalid if {
	invalid(match_with(data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"max_results": 0}))))
}

test_max_results_fraction_is_invalid if {
	invalid(match_with(data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"max_results": 2.5}))))
}

test_max_match_results_string_is_invalid if invalid(match_with(with_settings({"max_match_results": "10"})))

# --- retention_days -------------------------------------------------------------------------

test_retention_from_settings if fetch_with(data.liaison.testing.policy_data).obligations.retention_days == 30

test_retention_default if fetch_with(with_settings({})).obligations.retention_days == 90

test_retention_without_settings if {
	fetch_with(object.remove(data.liaison.testing.policy_data, ["settings"])).obligations.retention_days == 90
}

test_retention_negative_is_invalid if invalid(fetch_with(with_settings({"retention_days": -1})))

test_match_carries_no_retention if not match_with(data.liaison.testing.policy_data).obligations.retention_days

# --- approval_deadline_hours ----------------------------------------------------------------

# A firearm is in the fixture's approval_categories: its Fetch needs a person.
firearm_with(d) := data.liaison.testing.decide_data(
	object.union(data.liaison.testing.fetch_input, {
		"node": {"profile": "bilateral"},
		"request": {"category": "firearm"},
		"record": {"category": "firearm"},
	}),
	d,
)

with_fr_deadline(hours) := data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"approval_deadline_hours": hours}))

test_deadline_default if firearm_with(data.liaison.testing.policy_data).obligations.approval_deadline_hours == 72

test_deadline_from_settings if {
	firearm_with(with_settings({"approval_deadline_hours": 36})).obligations.approval_deadline_hours == 36
}

test_deadline_from_agreement_over_settings if {
	d := object.union(with_fr_deadline(12), {"settings": {"approval_deadline_hours": 36}})
	firearm_with(d).obligations.approval_deadline_hours == 12
}

test_deadline_agreement_may_be_longer_than_settings if {
	d := object.union(with_fr_deadline(120), {"settings": {"approval_deadline_hours": 36}})
	firearm_with(d).obligations.approval_deadline_hours == 120
}

test_deadline_zero_in_settings_is_invalid if invalid(firearm_with(with_settings({"approval_deadline_hours": 0})))

test_deadline_string_in_settings_is_invalid if invalid(firearm_with(with_settings({"approval_deadline_hours": "48"})))

test_deadline_fraction_in_agreement_is_invalid if invalid(firearm_with(with_fr_deadline(1.5)))

test_deadline_invalid_refuses_a_match_too if invalid(match_with(with_fr_deadline(0)))

test_deadline_absent_without_approval if {
	d := fetch_with(with_fr_deadline(12))
	d.allow == true
	d.obligations.require_approval == false
	not "approval_deadline_hours" in object.keys(d.obligations)
}

test_match_carries_no_deadline if match_with(with_fr_deadline(12)).obligations == {"max_results": 5}

# --- restrictions ---------------------------------------------------------------------------

test_blocked_countries_not_a_list if {
	d := object.union(data.liaison.testing.policy_data, {"restrictions": {"blocked_countries": "BY"}})
	invalid(match_with(d))
}

test_approval_categories_not_a_list if {
	d := object.union(data.liaison.testing.policy_data, {"restrictions": {"approval_categories": {"firearm": true}}})
	invalid(match_with(d))
}

test_agreement_redact_not_an_object if {
	invalid(match_with(data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"redact": ["health"]}))))
}

test_agreement_redact_entry_not_a_list if {
	d := data.liaison.testing.with_agreement("FR-DGPN", object.union(fr, {"redact": {"travel_document": "holder_address"}}))
	invalid(match_with(d))
}
