# Profile `strict`: hit/no-hit only (see strict.md).
#
# A Match is decided by the agreement as under `bilateral`; every Fetch is refused, so no
# record ever leaves the node: a requester with a hit must ask by another channel.
package liaison.profiles.strict

profile_reasons contains "fetch_not_permitted_by_profile" if data.liaison.base.is_fetch

deny_reasons := (data.liaison.base.common_reasons | profile_reasons) | data.liaison.base.notice_reasons

default obligations := {}

obligations := data.liaison.base.match_obligations if data.liaison.base.is_match

obligations := data.liaison.base.notice_obligations if data.liaison.base.is_publish_notice

decision := data.liaison.base.verdict(deny_reasons, obligations)
