"""The Alembic environment of the node's database (every table: records, tickets, received
records, notices, the outbox, the audit log's tables).

Driven by :mod:`node.schema` (script_location ``node:migrations``), never by an alembic.ini:
the node's configuration names the database, and the schema commands are `liaison db`.
A new revision goes in ``versions/`` (see docs/operating.md, "Upgrade (migrations)").
"""
