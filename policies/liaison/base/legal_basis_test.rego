# Unit tests for legal_basis.rego: what a Fetch needs beyond the agreement, JIT grants.
package liaison.base.legal_basis_test

fetch(patch) := data.liaison.testing.fetch("bilateral", patch)

only(patch, reason) if data.liaison.testing.denied(fetch(patch), [reason])

jit(patch) := fetch(object.union({"envelope": {"legal_basis": "jit", "case_reference": "JIT-2026-017"}}, patch))

jit_only(patch, reason) if data.liaison.testing.denied(jit(patch), [reason])

under_jits(jits, patch) := data.liaison.testing.decide_data(
	object.union(data.liaison.testing.fetch_input, object.union({"envelope": {"legal_basis": "jit", "case_reference": "JIT-2026-017"}}, patch)),
	object.union(object.remove(data.liaison.testing.policy_data, ["jits"]), {"jits": jits}),
)

grant := data.liaison.testing.jits["JIT-2026-017"]

test_fetch_bilateral_agreement_allowed if fetch({}).allow == true

test_fetch_none_is_insufficient if only({"envelope": {"legal_basis": "none"}}, "legal_basis_insufficient")

test_fetch_unknown_basis_is_insufficient if {
	d := fetch({"envelope": {"legal_basis": "goodwill"}})
	d.reasons == ["legal_basis_insufficient", "legal_basis_not_agreed"]
}

test_fetch_missing_basis_is_insufficient if {
	inp := data.liaison.testing.without(data.liaison.testing.fetch_input, ["envelope"], "legal_basis")
	d := data.liaison.testing.decide(inp)
	d.reasons == ["legal_basis_insufficient", "legal_basis_not_agreed"]
}

test_match_none_is_enough if data.liaison.testing.match("bilateral", {}).allow == true

test_mlat_with_reference if fetch({"envelope": {"legal_basis": "mlat", "has_legal_reference": true}}).allow == true

test_mlat_without_reference if only({"envelope": {"legal_basis": "mlat"}}, "legal_reference_missing")

test_treaty_with_reference if fetch({"envelope": {"legal_basis": "treaty", "has_legal_reference": true}}).allow == true

test_treaty_without_reference if only({"envelope": {"legal_basis": "treaty"}}, "legal_reference_missing")

test_treaty_reference_not_a_boolean if only({"envelope": {"legal_basis": "treaty", "has_legal_reference": "yes"}}, "legal_reference_missing")

test_case_reference_empty if only({"envelope": {"case_reference": ""}}, "case_reference_missing")

# Outside `jit` the node sends only the flag (the value would defeat the decision cache).
test_case_named_by_flag_alone if {
	inp := data.liaison.testing.without(data.liaison.testing.fetch_input, ["envelope"], "case_reference")
	data.liaison.testing.decide(object.union(inp, {"envelope": {"has_case_reference": true}})).allow == true
}

test_case_flag_false_is_missing if {
	inp := data.liaison.testing.without(data.liaison.testing.fetch_input, ["envelope"], "case_reference")
	d := data.liaison.testing.decide(object.union(inp, {"envelope": {"has_case_reference": false}}))
	data.liaison.testing.denied(d, ["case_reference_missing"])
}

# Under `jit` the flag is not enough: the value names the grant.
test_jit_flag_alone_is_missing if {
	inp := data.liaison.testing.without(
		object.union(data.liaison.testing.fetch_input, {"envelope": {"legal_basis": "jit", "has_case_reference": true}}),
		["envelope"], "case_reference",
	)
	d := data.liaison.testing.decide(inp)
	d.reasons == ["case_reference_missing", "jit_not_found"]
}

# --- JIT ------------------------------------------------------------------------------------

test_jit_granted if jit({}).allow == true

test_jit_first_day if jit({"now": "2026-01-01T00:00:00Z"}).allow == true

test_jit_last_day if jit({"now": "2026-12-31T23:59:59Z"}).allow == true

test_jit_day_before if jit_only({"now": "2025-12-31T23:59:59Z"}, "jit_not_in_force")

test_jit_day_after if jit_only({"now": "2027-01-01T00:00:00Z"}, "jit_not_in_force")

test_jit_unknown_case if jit_only({"envelope": {"case_reference": "JIT-2026-999"}}, "jit_not_found")

test_jit_missing_case if {
	inp := data.liaison.testing.without(
		object.union(data.liaison.testing.fetch_input, {"envelope": {"legal_basis": "jit"}}),
		["envelope"], "case_reference",
	)
	d := data.liaison.testing.decide(inp)
	d.reasons == ["case_reference_missing", "jit_not_found"]
}

test_jit_requester_not_member if {
	d := under_jits({"J": object.union(grant, {"members": ["DE", "NL"]})}, {})
	data.liaison.testing.denied(d, ["jit_not_member"])
}

test_jit_node_not_member if {
	d := under_jits({"J": object.union(grant, {"members": ["FR", "NL"]})}, {})
	data.liaison.testing.denied(d, ["jit_not_member"])
}

test_jit_members_not_a_list if {
	d := under_jits({"J": object.union(grant, {"members": "DE,FR"})}, {})
	data.liaison.testing.denied(d, ["jit_not_member"])
}

test_jit_not_in_force_and_not_member if {
	d := under_jits({"J": object.union(grant, {"members": ["DE"], "valid_until": "2026-06-30"})}, {})
	data.liaison.testing.denied(d, ["jit_not_in_force", "jit_not_member"])
}

test_jit_window_missing if {
	d := under_jits({"J": object.remove(grant, ["valid_from"])}, {})
	data.liaison.testing.denied(d, ["jit_not_in_force"])
}

# Two grants for one case, each failing a different check: no grant passes.
test_jit_split_grants_do_not_add_up if {
	d := under_jits(
		{
			"old": object.union(grant, {"valid_until": "2026-06-30"}),
			"new": object.union(grant, {"members": ["DE", "NL"]}),
		},
		{},
	)
	data.liaison.testing.denied(d, ["jit_not_in_force", "jit_not_member"])
}

test_jit_renewed_grant_passes if {
	d := under_jits(
		{
			"old": object.union(grant, {"valid_until": "2026-06-30"}),
			"new": object.union(grant, {"valid_from": "2026-07-01"}),
		},
		{},
	)
	d.allow == true
}

test_jits_not_an_object if data.liaison.testing.denied(under_jits([grant], {}), ["jit_not_found"])

test_jits_absent if data.liaison.testing.denied(under_jits(null, {}), ["jit_not_found"])

test_jit_grant_not_an_object if data.liaison.testing.denied(under_jits({"J": "JIT-2026-017"}, {}), ["jit_not_found"])

test_jit_on_match_needs_no_grant if {
	d := data.liaison.testing.match("bilateral", {"envelope": {"legal_basis": "jit"}})
	d.allow == true
}
