# Node-wide settings and restrictions (data.settings, data.restrictions), and the checks
# that the policy data has the shape the rules expect. A malformed number or list is
# refused as `policy_data_invalid` rather than silently read as "no limit".
package liaison.base

# --- max_results (Match) --------------------------------------------------------------------

# The tighter of the peer's cap and the node-wide cap; the node-wide cap is 10 unless
# data.settings.max_match_results says otherwise (CONTRACT.md), so an agreement can narrow
# it but never widen it past the node's own setting.
result_caps contains n if {
	n := agreement.max_results
	positive_integer(n)
}

result_caps contains node_max_results

default node_max_results := 10

node_max_results := data.settings.max_match_results if positive_integer(data.settings.max_match_results)

max_results := min(result_caps)

# --- retention_days (Fetch) -----------------------------------------------------------------

default retention_days := 90

retention_days := data.settings.retention_days if positive_integer(data.settings.retention_days)

# --- approval_deadline_hours (Fetch that a person must approve) -----------------------------

# How long the owning node's operators have to decide a ticket: the agreement with the peer
# says, else the node's settings, else 72 hours (three days: a weekend plus a working day).
# A profile may shorten it (eu-led: at most 48 hours), never lengthen it.
default node_approval_deadline_hours := 72

node_approval_deadline_hours := data.settings.approval_deadline_hours if {
	positive_integer(data.settings.approval_deadline_hours)
}

agreement_sets_deadline if positive_integer(agreement.approval_deadline_hours)

approval_deadline_hours := agreement.approval_deadline_hours if agreement_sets_deadline

approval_deadline_hours := node_approval_deadline_hours if not agreement_sets_deadline

# --- the shape of the policy data -----------------------------------------------------------

data_reasons contains "policy_data_invalid" if {
	n := agreement.max_results
	not positive_integer(n)
}

data_reasons contains "policy_data_invalid" if {
	n := data.settings.max_match_results
	not positive_integer(n)
}

data_reasons contains "policy_data_invalid" if {
	n := data.settings.retention_days
	not positive_integer(n)
}

data_reasons contains "policy_data_invalid" if {
	n := data.settings.approval_deadline_hours
	not positive_integer(n)
}

data_reasons contains "policy_data_invalid" if {
	n := agreement.approval_deadline_hours
	not positive_integer(n)
}

data_reasons contains "policy_data_invalid" if {
	some key in ["blocked_countries", "approval_categories"]
	list := data.restrictions[key]
	not is_array(list)
}

data_reasons contains "policy_data_invalid" if {
	table := agreement.redact
	not is_object(table)
}

data_reasons contains "policy_data_invalid" if {
	fields := agreement.redact[input.request.category]
	not is_array(fields)
}
