# Facts about a request that every profile reads, and the rules on who may ask at all.
#
# Package liaison.base is the floor every profile builds on (see base.md). Its rules only
# say *why* to refuse (sets of reasons) and *what* to oblige; a profile decides which of
# them apply and builds the decision with `verdict`.
package liaison.base

# --- facts about the request ----------------------------------------------------------------
#
# Engines differ on `not f(x)` and `not x in s` when `x` is undefined (OPA fails the whole
# body, regorus negates), so a refusal never negates a call on a possibly missing input
# field: it negates a rule instead (`not method_known`), which both engines agree on.

is_match if input.request.method == "Match"

is_fetch if input.request.method == "Fetch"

is_publish_notice if input.request.method == "PublishNotice"

methods := {"Match", "Fetch", "PublishNotice"}

non_empty_string(s) if {
	is_string(s)
	s != ""
}

purpose := input.envelope.purpose if non_empty_string(input.envelope.purpose)

requester_country := input.requester.country if non_empty_string(input.requester.country)

# `value` is an element of `list`, which must be a JSON array: any other type (a string, an
# object) never contains anything, so a malformed list refuses rather than allows.
member_of(value, list) if {
	is_array(list)
	value in list
}

positive_integer(n) if {
	is_number(n)
	n >= 1
	floor(n) == n
}

# --- time -----------------------------------------------------------------------------------

# The date part of `now` (RFC 3339 UTC). Dates are compared as ISO strings, never parsed:
# engines disagree on parsing a `Z` suffix. A clock that is not `YYYY-MM-DDT...` leaves
# `today` undefined, and then nothing is in force.
today := date if {
	is_string(input.now)
	substring(input.now, 10, 1) == "T"
	date := substring(input.now, 0, 10)
	iso_date(date)
}

# An ISO date, `YYYY-MM-DD` with a month 01-12 and a day 01-31, checked without a regex
# (regorus compiles one on every call, which cost ~30 µs a date). A clock such as
# "2026-13-45" is unreadable, and then nothing is in force.
iso_date(s) if {
	is_string(s)
	count(s) == 10
	substring(s, 4, 1) == "-"
	substring(s, 7, 1) == "-"
	digits(substring(s, 0, 4))
	month := substring(s, 5, 2)
	day := substring(s, 8, 2)
	digits(month)
	digits(day)
	month >= "01"
	month <= "12"
	day >= "01"
	day <= "31"
}

# Every character a decimal digit. (No to_number: regorus raises an error where OPA is
# undefined, and two digit strings compare as their numbers do.)
digits(s) if {
	count(s) > 0
	every c in split(s, "") {
		c in {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	}
}

# `today` lies in [from, until], both inclusive ISO dates; a missing or malformed bound is
# never in force.
in_window(from, until) if {
	iso_date(from)
	iso_date(until)
	today >= from
	today <= until
}

# --- membership -----------------------------------------------------------------------------

membership_reasons contains "unsupported_input_version" if not input.version == 1

membership_reasons contains "requester_not_active" if not input.requester.status == "active"

# Blocking, source restrictions and JIT membership work by country: without one, a
# requester is refused whenever a country must be checked (a Fetch, or a node that blocks
# countries). The node always sends it; a hit/no-hit without blocking does not need it.
country_needed if is_fetch

country_needed if {
	is_array(data.restrictions.blocked_countries)
	count(data.restrictions.blocked_countries) > 0
}

membership_reasons contains "requester_country_missing" if {
	country_needed
	not requester_country
}

membership_reasons contains "country_blocked" if {
	member_of(requester_country, data.restrictions.blocked_countries)
}

method_known if input.request.method in methods

membership_reasons contains "method_unknown" if not method_known
