"""A stored code action (table `codes`)."""

from __future__ import annotations

import uuid

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk

CODE_TYPES = ("flow", "endpoint")
#: How leniently the engine treats a code: `legacy` behaves as the Go service's engine did
#: (adopted codes), `strict` is ours (new codes).
COMPAT_MODES = ("strict", "legacy")
# How a code's runs are served: `pool` a fresh container each run (from the warm pool);
# `warm` a container bound to the code, a fresh process each run; `resident` one long-lived
# process per bound container (module state persists, as on Lambda) - for now served as
# `warm` (README "Run modes").
CODE_MODES = ("pool", "warm", "resident")
STRICT, LEGACY = COMPAT_MODES
TIMEOUT_DEFAULT, TIMEOUT_MIN, TIMEOUT_MAX = 60, 5, 300


class Code(UuidPk, Timestamps, Base):
    __tablename__ = "codes"
    __table_args__ = (
        CheckConstraint("type IN ('flow', 'endpoint')", name="type"),
        CheckConstraint("language IN ('python', 'go', 'javascript')", name="language"),
        CheckConstraint(f"timeout BETWEEN {TIMEOUT_MIN} AND {TIMEOUT_MAX}", name="timeout"),
        CheckConstraint("compat IN ('strict', 'legacy')", name="compat"),
        Index("ix_codes_project_uuid_type", "project_uuid", "type"),
    )

    mongo_object_id: Mapped[str | None] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False, default="")
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    url: Mapped[str | None] = mapped_column(String(512))
    project_uuid: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    timeout: Mapped[int] = mapped_column(Integer, nullable=False, default=TIMEOUT_DEFAULT)
    # Outbound network for the code's runs (public internet only; never our services).
    network: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    # Runs reuse a warm environment bound to this code (a fresh process each run) instead of
    # a fresh container each run; see engines/PROTOCOL.md "Warm environments".
    warm: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # One of CODE_MODES; `warm` above stays in step (true for warm and resident), so `warm=true`
    # keeps working as the alias of mode warm and whatever reads `warm` serves both.
    mode: Mapped[str] = mapped_column(
        String(16), nullable=False, default="pool", server_default="pool"
    )
    # `legacy`: the old engine's leniency (codes adopted from the Go service); `strict`: ours.
    compat: Mapped[str] = mapped_column(
        String(16), nullable=False, default="strict", server_default="strict"
    )
