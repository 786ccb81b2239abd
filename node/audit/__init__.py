"""The node's audit log: entries, where they are kept, checking and signing them, and
witnessing the peers' logs."""
