"""The gRPC edge: the only part of the node that imports the generated wire code.

Serving, TLS, identifying and admitting the peer, and the two services' handlers live here;
what the handlers call (matching, policy, the audit log) works on plain dataclasses.
"""
