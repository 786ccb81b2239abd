# The exchange policy of a Liaison node (DESIGN.md §5).
#
# The node queries data.liaison.exchange.decision and nothing else. That rule is a plain
# object built from helper rules that all carry defaults, so it is defined for every input,
# even on engines that ignore `default` on the rule being queried. Every reason is kept:
# a requester is told all that is wrong at once, not one thing per round trip.
package liaison.exchange

decision := {
	"allow": allow,
	"reasons": sort(deny_reasons),
	"obligations": obligations,
}

default allow := false

allow if count(deny_reasons) == 0

default obligations := {}

obligations := {"max_results": max_results} if allow

# --- who is asking, under which agreement ---------------------------------------------------

agreement := data.agreements[input.requester.node_id]

has_agreement if is_object(agreement)

# First ten characters of an RFC 3339 UTC time: compared as an ISO date string, because
# some engines return undefined when parsing a `Z` suffix.
today := substring(input.now, 0, 10) if is_string(input.now)

# A missing bound or a missing clock is not "in force": fail closed.
in_force if {
	today >= agreement.valid_from
	today <= agreement.valid_until
}

purpose := input.envelope.purpose if {
	is_string(input.envelope.purpose)
	input.envelope.purpose != ""
}

# --- reasons to refuse ----------------------------------------------------------------------

deny_reasons contains "unsupported_input_version" if not input.version == 1

deny_reasons contains "requester_not_active" if not input.requester.status == "active"

deny_reasons contains "no_agreement" if not has_agreement

deny_reasons contains "agreement_not_in_force" if {
	has_agreement
	not in_force
}

deny_reasons contains "purpose_missing" if not purpose

deny_reasons contains "purpose_not_agreed" if {
	has_agreement
	not purpose in agreement.purposes
	purpose
}

deny_reasons contains "category_not_agreed" if {
	has_agreement
	not input.request.category in agreement.categories
}

deny_reasons contains "method_not_permitted" if {
	has_agreement
	not input.request.method in agreement.methods
}

deny_reasons contains "legal_basis_not_agreed" if {
	has_agreement
	not input.envelope.legal_basis in agreement.legal_bases
}

# --- obligations ----------------------------------------------------------------------------

# The tighter of the peer's cap and the node-wide cap; 10 when neither is set.
result_caps contains n if {
	n := agreement.max_results
	is_number(n)
}

result_caps contains n if {
	n := data.settings.max_match_results
	is_number(n)
}

default max_results := 10

max_results := min(result_caps) if count(result_caps) > 0
