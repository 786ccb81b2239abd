"""The federation's shared vocabulary: categories, identifier kinds, purposes, legal bases.

Every value here is bounded and known in advance, which is what lets them appear in policy
input, audit entries and metric labels without ever carrying a personal value.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

CATEGORIES: Final[frozenset[str]] = frozenset(
    {"wanted_person", "missing_person", "travel_document", "vehicle", "firearm"}
)

# For each category: the identifier kinds a record carries (and a query may use).
# `name_dob` is the normalised composite "family|given|YYYY-MM-DD" for people.
IDENTIFIER_KINDS: Final[dict[str, frozenset[str]]] = {
    "wanted_person": frozenset({"name_dob", "document_number"}),
    "missing_person": frozenset({"name_dob", "document_number"}),
    "travel_document": frozenset({"document_number"}),
    "vehicle": frozenset({"vin", "registration_number"}),
    "firearm": frozenset({"serial_number"}),
}

PURPOSES: Final[frozenset[str]] = frozenset(
    {
        "criminal_investigation",
        "crime_prevention",
        "border_control",
        "missing_person_search",
        "counter_terrorism",
        "execution_of_sentence",
    }
)

HANDLING_CODES: Final[frozenset[str]] = frozenset({"H0", "H1", "H2", "H3"})

# The closed list of notice categories (an alert one node broadcasts): a wanted or missing
# person, a stolen travel document, a stolen vehicle. Each is a federation category, so a
# notice is matched with the identifier kinds (and normalisation) its records use.
NOTICE_CATEGORIES: Final[frozenset[str]] = frozenset(
    {"wanted_person", "missing_person", "travel_document", "vehicle"}
)

# Longest notice summary (free text for the receiving officers), in characters.
MAX_NOTICE_SUMMARY: Final[int] = 1000

# Longest identifier value accepted anywhere (query or import), in characters.
MAX_IDENTIFIER_LENGTH: Final[int] = 256


class LegalBasis(StrEnum):
    NONE = "none"
    BILATERAL_AGREEMENT = "bilateral_agreement"
    MLAT = "mlat"
    JIT = "jit"
    TREATY = "treaty"
