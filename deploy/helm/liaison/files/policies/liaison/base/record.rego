# Facts about the record a Fetch asks for: its handling code and source restrictions.
#
# Handling codes follow Europol's: H0 law-enforcement use only, H1 not for court use without
# the owner's permission, H2 not to be disseminated further, H3 other restrictions (here: a
# human approves first). Source restrictions name countries a record must never reach, as
# in INTERPOL's rules; they travel with a record that is re-shared, and a re-shared record
# that carries any is not passed on again.
package liaison.base

handling_codes := {"H0", "H1", "H2", "H3"}

has_record if is_object(input.record)

# A record received from another country and passed on. Without an `origin_country` equal
# to our own, a record counts as re-shared: the stricter reading.
own_record if input.record.origin_country == input.node.country

is_reshare if not own_record

record_category_matches if input.record.category == input.request.category

handling_code_known if input.record.handling_code in handling_codes

record_reasons contains "record_missing" if {
	is_fetch
	not has_record
}

record_reasons contains "record_category_mismatch" if {
	is_fetch
	has_record
	not record_category_matches
}

record_reasons contains "handling_code_unknown" if {
	is_fetch
	has_record
	not handling_code_known
}

record_reasons contains "handling_code_forbids_resharing" if {
	is_fetch
	input.record.handling_code == "H2"
	is_reshare
}

record_reasons contains "source_restricted" if {
	is_fetch
	member_of(requester_country, input.record.source_restrictions)
}

# Source restrictions are the originator's conditions: only the originator can weigh them
# against a country it did not name. A record received with any restriction is therefore
# not passed on, whoever asks (the requester named in it hears `source_restricted` too).
record_reasons contains "source_restriction_forbids_resharing" if {
	is_fetch
	is_reshare
	restrictions := input.record.source_restrictions
	is_array(restrictions)
	count(restrictions) > 0
}

# A restriction list that is not a list cannot be checked: refuse rather than ignore it.
record_reasons contains "source_restrictions_invalid" if {
	is_fetch
	restrictions := input.record.source_restrictions
	not is_array(restrictions)
}
