"""Build the policy engine a node's configuration names: one place, for the server and the
operator commands alike, so `liaison policy explain` asks the very engine `serve` would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.config import PolicySection
from node.policy.decision import PolicyEngine
from node.policy.embedded import EmbeddedEngine
from node.policy.opa import OpaEngine


def build_engine(policy: PolicySection, data: Mapping[str, Any]) -> PolicyEngine:
    """The configured engine over `policy.policy_dir` and `data` (no cache, no reload)."""
    if policy.engine == "opa":
        return OpaEngine(
            policy.opa_url,
            policy.policy_dir,
            data,
            deadline=policy.deadline_ms / 1000,
            ca=policy.opa_ca,
            client_certificate=policy.opa_client_certificate,
            client_key=policy.opa_client_key,
        )
    return EmbeddedEngine(policy.policy_dir, data)
