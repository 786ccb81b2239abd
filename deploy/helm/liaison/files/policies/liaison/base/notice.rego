# Receiving a notice (PublishNotice): an alert another node broadcasts, which this node
# stores and matches locally if its policy accepts it (policies/CONTRACT.md).
#
# The agreement decides as for any request (the method `PublishNotice`, the category, the
# purpose, the legal basis); on top, the notice's handling code must be one the node takes
# from that peer: the agreement's `notice_handling_codes`, else H0-H2. An H3 notice carries
# the publisher's own conditions, which a person must read before anyone acts on it; an
# automatic receipt cannot give it that, so it is refused unless the agreement says so.
package liaison.base

default_notice_handling_codes := {"H0", "H1", "H2"}

handling_codes := {"H0", "H1", "H2", "H3"}

notice_handling_code := input.notice.handling_code if is_string(input.notice.handling_code)

agreement_lists_notice_codes if is_array(agreement.notice_handling_codes)

notice_code_accepted if {
	agreement_lists_notice_codes
	member_of(notice_handling_code, agreement.notice_handling_codes)
}

notice_code_accepted if {
	not agreement_lists_notice_codes
	notice_handling_code in default_notice_handling_codes
}

notice_code_known if notice_handling_code in handling_codes

# A rule, not `not is_object(input.notice)`: engines disagree on negating a call whose
# argument is undefined (request.rego).
notice_given if is_object(input.notice)

notice_reasons contains "notice_missing" if {
	is_publish_notice
	not notice_given
}

notice_reasons contains "handling_code_unknown" if {
	is_publish_notice
	notice_given
	not notice_code_known
}

notice_reasons contains "handling_code_not_accepted" if {
	is_publish_notice
	notice_code_known
	has_agreement
	not notice_code_accepted
}

# The agreement's list must be a list: anything else is data its author did not mean.
data_reasons contains "policy_data_invalid" if {
	codes := agreement.notice_handling_codes
	not is_array(codes)
}

# What an allowed PublishNotice must honour: the node keeps the notice at most
# `retention_days` (and never past its expiry), like anything it receives.
notice_obligations := {"retention_days": retention_days}
