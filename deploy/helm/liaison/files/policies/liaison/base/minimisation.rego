# Minimisation: what a disclosed record loses (`redact`), who must look first and how soon
# (`require_approval`, `approval_deadline_hours`), and the obligations of an allowed Match or
# Fetch.
package liaison.base

# Special categories of personal data (Art. 10 of Directive (EU) 2016/680): racial or ethnic
# origin, political opinions, religious or philosophical beliefs, trade-union membership,
# genetic data, biometric data, health, sex life and sexual orientation. The names are the
# payload fields a record may carry them in; profiles that redact them use this set.
special_category_fields := {
	"biometrics",
	"ethnicity",
	"genetic_data",
	"health",
	"philosophical_beliefs",
	"political_opinion",
	"religion",
	"sex_life",
	"sexual_orientation",
	"trade_union_membership",
}

# Fields the agreement with this peer withholds for the category asked for.
agreement_redact contains field if {
	fields := agreement.redact[input.request.category]
	is_array(fields)
	some field in fields
	is_string(field)
}

# The node asks a human before disclosing these categories (data.restrictions).
default approval_by_node := false

approval_by_node if member_of(input.request.category, data.restrictions.approval_categories)

# H3 "other restrictions": the owner's conditions are checked by a person.
default approval_by_marking := false

approval_by_marking if input.record.handling_code == "H3"

# A joint investigation team was set up so that its members share without asking each time:
# a member's Fetch under a grant in force (legal_basis.rego) needs no person for the
# categories the node or the profile would otherwise hold back. H3 stays with a person: it
# is the owner's condition on this one record, not a rule about its category.
jit_waives_approval if {
	is_jit_fetch
	jit_granted
}

approval_by_category(_) := false if jit_waives_approval

approval_by_category(sensitive) := true in {sensitive, approval_by_node} if not jit_waives_approval

# What an allowed Match must honour.
match_obligations := {"max_results": max_results}

# What an allowed Fetch must honour: `redact` adds the profile's fields to the agreement's;
# `sensitive` is the profile's own call on approval; `deadline` is the profile's
# approval deadline in hours, carried only when a person must approve (a ticket needs it,
# a record disclosed at once has nothing to wait for).
fetch_obligations(redact, sensitive, deadline) := object.union(duties, approval_deadline(approval, deadline)) if {
	approval := true in {approval_by_marking, approval_by_category(sensitive)}
	duties := {
		"handling_code": input.record.handling_code,
		"redact": sort(redact | agreement_redact),
		"require_approval": approval,
		"retention_days": retention_days,
	}
}

approval_deadline(true, hours) := {"approval_deadline_hours": hours}

approval_deadline(false, _) := {}
