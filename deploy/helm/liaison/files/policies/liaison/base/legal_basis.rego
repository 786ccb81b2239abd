# The legal basis of a step-2 request (Fetch): what makes disclosing a record lawful.
#
# A Match (hit/no-hit) needs only a legal basis the agreement names. A Fetch discloses a
# record, and every record can identify a person (directly, or as the holder of a document,
# vehicle or firearm), so `none` never suffices; `mlat` and `treaty` must cite their
# instrument; `jit` must name an active joint investigation team both countries belong to.
package liaison.base

fetch_legal_bases := {"bilateral_agreement", "mlat", "jit", "treaty"}

bases_needing_reference := {"mlat", "treaty"}

case_reference := input.envelope.case_reference if {
	non_empty_string(input.envelope.case_reference)
}

legal_basis_sufficient if input.envelope.legal_basis in fetch_legal_bases

legal_basis_reasons contains "legal_basis_insufficient" if {
	is_fetch
	not legal_basis_sufficient
}

legal_basis_reasons contains "legal_reference_missing" if {
	is_fetch
	input.envelope.legal_basis in bases_needing_reference
	not input.envelope.has_legal_reference == true
}

# A disclosed record is tied to the requester's case, for the audit and for JIT grants.
# The input carries the case reference itself only under `jit`, where it names the grant;
# other Fetches say only that they name a case, so their decisions can be cached across
# cases (policies/CONTRACT.md). A case reference given must not be empty.
case_named if case_reference

case_named if {
	not is_jit_fetch
	input.envelope.has_case_reference == true
	not "case_reference" in object.keys(input.envelope)
}

legal_basis_reasons contains "case_reference_missing" if {
	is_fetch
	not case_named
}

# --- joint investigation teams (data.jits) -------------------------------------------------

is_jit_fetch if {
	is_fetch
	input.envelope.legal_basis == "jit"
}

# The grants naming the request's case (usually one; a renewed team may have two).
jit_grants contains grant if {
	is_object(data.jits)
	some grant in data.jits
	is_object(grant)
	grant.case_reference == case_reference
}

jit_in_force(grant) if in_window(grant.valid_from, grant.valid_until)

jit_members(grant) if {
	member_of(input.node.country, grant.members)
	member_of(requester_country, grant.members)
}

jit_granted if {
	some grant in jit_grants
	jit_in_force(grant)
	jit_members(grant)
}

legal_basis_reasons contains "jit_not_found" if {
	is_jit_fetch
	count(jit_grants) == 0
}

# When no grant passes, each failing grant says why; at least one reason always results.
legal_basis_reasons contains "jit_not_in_force" if {
	is_jit_fetch
	not jit_granted
	some grant in jit_grants
	not jit_in_force(grant)
}

legal_basis_reasons contains "jit_not_member" if {
	is_jit_fetch
	not jit_granted
	some grant in jit_grants
	not jit_members(grant)
}
