"""The server a country runs: its records, its policy, its audit log, its metrics."""
