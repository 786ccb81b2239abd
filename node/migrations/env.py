"""Alembic's environment: runs the revisions on the connection :mod:`node.schema` hands over.

:func:`node.schema.upgrade` opens the connection and the transaction (one transaction for the
whole upgrade, SQLite included), so this only configures the context. ``render_as_batch``
lets a later revision alter a SQLite table (SQLite's ALTER TABLE cannot, so Alembic copies
the table); ``compare_type`` makes autogenerate see a changed column type.
"""

from __future__ import annotations

from alembic import context

from node.schema import target_metadata

_connection = context.config.attributes["connection"]
context.configure(
    connection=_connection,
    target_metadata=target_metadata(),
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
