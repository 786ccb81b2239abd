"""The audit log's anchor: the Merkle compact range and chain head saved with the newest
signed checkpoint, so that a node opens its log by checking only the entries after it
(node/audit/anchor.py).

Revision ID: 0002
Revises: 0001

One row, replaced in the transaction that adds a checkpoint. A database upgraded from 0001
has no anchor yet: the node opens such a log from entry 0 once, and saves the anchor with
its next checkpoint. Created only if missing: the audit store of this code version makes it
when it opens a log it may write (node/audit/database_store.py), as it makes its other
tables for throwaway logs.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Integer, Text, inspect

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if inspect(op.get_bind()).has_table("audit_anchor"):
        return
    op.create_table(
        "audit_anchor",
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("data", Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_anchor")
