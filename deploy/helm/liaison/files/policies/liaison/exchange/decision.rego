# The exchange policy of a Liaison node (policies/CONTRACT.md).
#
# The node queries data.liaison.exchange.decision and nothing else. It hands the request to
# the profile the node selected (input.node.profile) and checks the profile's answer. The
# decision is a plain object built from helper rules that all carry defaults, so it is
# defined for every input, even on engines that ignore `default` on the rule being queried.
package liaison.exchange

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": obligations,
}

# Only the selected profile is evaluated.
default profile_decision := {"allow": false, "reasons": ["unknown_profile"], "obligations": {}}

profile_decision := data.liaison.profiles.eu_led.decision if input.node.profile == "eu-led"

profile_decision := data.liaison.profiles.bilateral.decision if input.node.profile == "bilateral"

profile_decision := data.liaison.profiles.strict.decision if input.node.profile == "strict"

# The input schema is the entry point's own concern: a wrong version is named whichever
# profile (known or not) answers.
entry_reasons contains "unsupported_input_version" if not input.version == 1

# Whatever a profile returns, an allow needs `allow: true`, no reasons and an object of
# obligations; a deny always names at least one reason.
default allow := false

allow if {
	profile_decision.allow == true
	profile_decision.reasons == []
	is_object(profile_decision.obligations)
	count(entry_reasons) == 0
}

default reasons := ["policy_error"]

reasons := [] if allow

profile_reasons contains reason if {
	is_array(profile_decision.reasons)
	some reason in profile_decision.reasons
}

all_reasons := profile_reasons | entry_reasons

reasons := sort(all_reasons) if {
	not allow
	count(all_reasons) > 0
}

default obligations := {}

obligations := profile_decision.obligations if allow
