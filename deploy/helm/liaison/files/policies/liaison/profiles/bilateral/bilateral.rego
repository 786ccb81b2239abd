# Profile `bilateral`: the agreement with each peer decides (see bilateral.md).
#
# The shared floor (liaison.base) and nothing more: what the agreement allows is allowed,
# and a Fetch is redacted only as the agreement says.
package liaison.profiles.bilateral

deny_reasons := (data.liaison.base.common_reasons | data.liaison.base.fetch_reasons) | data.liaison.base.notice_reasons

default obligations := {}

obligations := data.liaison.base.match_obligations if data.liaison.base.is_match

obligations := data.liaison.base.notice_obligations if data.liaison.base.is_publish_notice

obligations := data.liaison.base.fetch_obligations(set(), false, data.liaison.base.approval_deadline_hours) if data.liaison.base.is_fetch

decision := data.liaison.base.verdict(deny_reasons, obligations)
