# Profile `eu-led`: in the spirit of Directive (EU) 2016/680 (see eu_led.md).
#
# On top of the agreement: strict purpose limitation (the purpose must also be compatible
# with the category), a person's approval before a person record is disclosed, and special
# categories of personal data (Art. 10) and person fields of object records redacted.
package liaison.profiles.eu_led

# The purposes each category may be used for, whatever an agreement says. A category not
# listed here is compatible with nothing: adding a category means deciding its purposes.
compatible_purposes := {
	"wanted_person": {"criminal_investigation", "counter_terrorism", "execution_of_sentence", "border_control"},
	"missing_person": {"missing_person_search", "criminal_investigation"},
	"travel_document": {"criminal_investigation", "crime_prevention", "counter_terrorism", "border_control"},
	"vehicle": {"criminal_investigation", "crime_prevention", "counter_terrorism", "border_control"},
	"firearm": {"criminal_investigation", "crime_prevention", "counter_terrorism", "border_control"},
}

# Records about a person: a human approves every disclosure (Fetch).
sensitive_categories := {"wanted_person", "missing_person"}

# Object records link to people too; these fields name them and are not needed to act on
# the object (a stolen car is seized whoever owns it).
linked_person_fields := {
	"travel_document": {"holder_address", "holder_phone"},
	"vehicle": {"owner_name", "owner_address", "keeper_name", "keeper_address"},
	"firearm": {"holder_name", "holder_address"},
}

# A category that is not a string is compatible with nothing (object.get would read a list
# as a path into the table).
category := input.request.category if is_string(input.request.category)

purpose_compatible if data.liaison.base.purpose in object.get(compatible_purposes, category, set())

profile_reasons contains "purpose_incompatible_with_category" if {
	data.liaison.base.purpose
	not purpose_compatible
}

deny_reasons := ((data.liaison.base.common_reasons | data.liaison.base.fetch_reasons) | profile_reasons) | data.liaison.base.notice_reasons

redact := data.liaison.base.special_category_fields | object.get(linked_person_fields, category, set())

sensitive := input.request.category in sensitive_categories

# Prüm II (Regulation (EU) 2024/982) gives the requested state 48 hours to release core data
# after a confirmed match: a person decides within that, or sooner when the agreement or the
# node's settings say so (eu_led.md).
max_approval_deadline_hours := 48

approval_deadline_hours := min({max_approval_deadline_hours, data.liaison.base.approval_deadline_hours})

default obligations := {}

obligations := data.liaison.base.match_obligations if data.liaison.base.is_match

obligations := data.liaison.base.notice_obligations if data.liaison.base.is_publish_notice

obligations := data.liaison.base.fetch_obligations(redact, sensitive, approval_deadline_hours) if data.liaison.base.is_fetch

decision := data.liaison.base.verdict(deny_reasons, obligations)
