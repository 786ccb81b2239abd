# The agreement with the requesting peer: data.agreements[requester.node_id].
#
# Every exchange, under every profile and legal basis, needs an agreement in force that
# names the category, the purpose, the method and the legal basis of the request. A list
# that is missing or not a JSON array agrees to nothing.
package liaison.base

agreement := data.agreements[input.requester.node_id] if {
	is_object(data.agreements[input.requester.node_id])
}

has_agreement if is_object(agreement)

agreed(key, value) if member_of(value, agreement[key])

agreement_in_force if in_window(agreement.valid_from, agreement.valid_until)

purpose_agreed if agreed("purposes", purpose)

category_agreed if agreed("categories", input.request.category)

method_agreed if agreed("methods", input.request.method)

legal_basis_agreed if agreed("legal_bases", input.envelope.legal_basis)

agreement_reasons contains "no_agreement" if not has_agreement

agreement_reasons contains "agreement_not_in_force" if {
	has_agreement
	not agreement_in_force
}

agreement_reasons contains "purpose_missing" if not purpose

agreement_reasons contains "purpose_not_agreed" if {
	has_agreement
	purpose
	not purpose_agreed
}

agreement_reasons contains "category_not_agreed" if {
	has_agreement
	not category_agreed
}

agreement_reasons contains "method_not_permitted" if {
	has_agreement
	not method_agreed
}

agreement_reasons contains "legal_basis_not_agreed" if {
	has_agreement
	not legal_basis_agreed
}
