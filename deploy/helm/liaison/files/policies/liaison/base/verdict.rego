# The reasons every profile shares, and the one way a profile turns reasons and
# obligations into a decision (policies/CONTRACT.md).
package liaison.base

# Refusals that hold whatever the method: who asks, under which agreement, with which data.
common_reasons := (membership_reasons | agreement_reasons) | data_reasons

# Refusals particular to disclosing a record (each rule applies to Fetch only).
fetch_reasons := legal_basis_reasons | record_reasons

# Allow only with no reason to refuse *and* some obligation: every allowed Match carries
# `max_results` and every allowed Fetch `handling_code`, so an empty set of obligations
# means something was undefined, and that is refused.
verdict(reasons, obligations) := {"allow": true, "reasons": [], "obligations": obligations} if {
	count(reasons) == 0
	count(obligations) > 0
}

verdict(reasons, _) := {"allow": false, "reasons": sort(reasons), "obligations": {}} if {
	count(reasons) > 0
}

verdict(reasons, obligations) := {"allow": false, "reasons": ["obligations_undefined"], "obligations": {}} if {
	count(reasons) == 0
	count(obligations) == 0
}
