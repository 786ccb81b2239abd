"""Policy engines behind one small interface; the safe default is always deny."""

from node.policy.decision import Decision, PolicyEngine, PolicyUnavailable

__all__ = ["Decision", "PolicyEngine", "PolicyUnavailable"]
