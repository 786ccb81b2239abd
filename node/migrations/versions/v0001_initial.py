"""The schema as Liaison made it before migrations, every table.

Revision ID: 0001
Revises: (none)

Frozen here, not imported from the models: a later model change is a new revision, and this
one must keep describing what ``create_all`` made then, because a database made by that
version is recognised by comparing its tables with :func:`schema` (node.schema.upgrade) and
recorded at this revision. For the same reason :func:`upgrade` creates only the tables a
database lacks (a node whose audit log was a file never had the audit tables).

Names are what ``create_all`` gave: indexes ``ix_<table>_<columns>``; primary, unique and
foreign keys unnamed, so each backend names them (PostgreSQL: ``<table>_pkey``,
``<table>_<column>_key``, ``<table>_<column>_fkey``). A later revision that drops or alters
one of those constraints on SQLite names it in its batch operation.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_IDENTIFIER = 256  # federation.vocabulary.MAX_IDENTIFIER_LENGTH when this revision was made


def _when(name: str, *, nullable: bool = False, index: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable, index=index)


def _s(
    name: str,
    length: int,
    *,
    nullable: bool = False,
    primary_key: bool = False,
    unique: bool = False,
    index: bool = False,
) -> Column[object]:
    """A VARCHAR column (SQLModel's ``str``), NOT NULL unless told."""
    return Column(
        name,
        String(length),
        nullable=nullable,
        primary_key=primary_key,
        unique=unique or None,
        index=index or None,
    )


def _t(name: str) -> Column[object]:
    return Column(name, Text, nullable=False)


def _i(name: str) -> Column[object]:
    return Column(name, Integer, nullable=False)


def _notice_columns() -> list[Column[object]]:
    """What a received and a published notice share (besides their keys)."""
    return [
        _i("version"),
        _s("category", 32),
        _t("identifiers"),
        _t("summary"),
        _s("handling_code", 8),
        Column("to_all_members", Boolean, nullable=False),
        _t("recipients"),
        _when("expires_at"),
        _when("active_until"),
        _s("state", 16),
        _when("created_at"),
        _when("updated_at"),
        _s("purpose", 64),
        _s("legal_basis", 32),
    ]


def schema() -> MetaData:
    """Every table of revision 0001, in a metadata of its own."""
    m = MetaData()
    Table(
        "records",
        m,
        Column("id", Integer, primary_key=True),
        _s("ref", 32, unique=True),
        _s("category", 32, index=True),
        _s("handling_code", 8),
        _t("source_restrictions"),
        _t("payload"),
        _when("created_at"),
    )
    Table(
        "identifiers",
        m,
        Column("id", Integer, primary_key=True),
        Column(
            "record_id",
            Integer,
            ForeignKey("records.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        _s("kind", 32),
        _s("value", _IDENTIFIER),
        Index("ix_identifiers_kind_value", "kind", "value", "record_id"),
    )
    Table(
        "tickets",
        m,
        _s("id", 32, primary_key=True),
        _s("requester", 64, index=True),
        _s("record_ref", 32),
        _s("category", 32),
        _s("purpose", 64),
        _s("legal_basis", 32),
        _t("legal_reference"),
        _t("case_reference"),
        _s("handling_code", 8),
        _t("redact"),
        _t("extra_redact"),
        _i("retention_days"),
        _when("created_at"),
        _when("deadline_at"),
        _s("state", 16),
        _when("decided_at", nullable=True),
        _t("operator"),
        _t("reason"),
        _when("delivered_at", nullable=True),
        _s("request_entry", 64),
        Index("ix_tickets_state_deadline", "state", "deadline_at"),
    )
    Table(
        "received_records",
        m,
        _s("id", 32, primary_key=True),
        _s("from_node", 64, index=True),
        _s("record_ref", 32),
        _s("category", 32),
        _t("payload"),
        _s("handling_code", 8),
        _t("source_restrictions"),
        _s("origin_country", 2),
        _s("purpose", 64),
        _s("legal_basis", 32),
        _t("legal_reference"),
        _t("case_reference"),
        _s("ticket_id", 32, nullable=True),
        _when("received_at"),
        _when("retain_until", index=True),
    )
    Table(
        "received_identifiers",
        m,
        Column("id", Integer, primary_key=True),
        Column(
            "received_id",
            String(32),
            ForeignKey("received_records.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        _s("kind", 32),
        _s("value", _IDENTIFIER),
        Index("ix_received_identifiers_kind_value", "kind", "value", "received_id"),
    )
    Table(
        "received_purges",
        m,
        _s("id", 32, primary_key=True),
        _s("from_node", 64),
        _s("category", 32),
        _s("purpose", 64),
        _s("legal_basis", 32),
        _t("case_reference"),
        _s("ticket_id", 32, nullable=True),
        _when("retain_until"),
        _when("purged_at"),
    )
    Table(
        "notices_received",
        m,
        _s("publisher", 64, primary_key=True),
        _s("notice_id", 64, primary_key=True),
        *_notice_columns(),
    )
    Table(
        "notice_keys",
        m,
        Column("id", Integer, primary_key=True),
        _s("publisher", 64),
        _s("notice_id", 64, index=True),
        _s("kind", 32),
        _s("value", _IDENTIFIER),
        Index("ix_notice_keys_kind_value", "kind", "value"),
    )
    Table(
        "notice_hits",
        m,
        _s("id", 32, primary_key=True),
        _s("publisher", 64),
        _s("notice_id", 64),
        _s("category", 32, index=True),
        _s("trigger", 96),
        _when("at", index=True),
    )
    Table(
        "notices_published",
        m,
        _s("notice_id", 64, primary_key=True),
        _s("publisher", 64),
        *_notice_columns(),
        _t("legal_reference"),
        _t("case_reference"),
        _t("operator"),
    )
    Table(
        "notice_outbox",
        m,
        _s("notice_id", 64, primary_key=True),
        _s("recipient", 64, primary_key=True),
        _i("version"),
        _s("action", 16),
        _s("state", 16),
        _i("attempts"),
        _when("next_attempt_at"),
        _t("last_reason"),
        _when("updated_at"),
        Index("ix_notice_outbox_state_next", "state", "next_attempt_at"),
    )
    Table(
        "audit_entries",
        m,
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        _s("id", 32, unique=True),
        _t("line"),
    )
    Table(
        "audit_checkpoints",
        m,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("size", BigInteger, nullable=False),
        _t("note"),
    )
    return m


def upgrade() -> None:
    # checkfirst: a database made before migrations keeps the tables it has (node.schema
    # checked them against schema() before this runs) and gains only those it lacked.
    schema().create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    schema().drop_all(op.get_bind())
