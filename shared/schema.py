"""Every table of the schema, for Alembic: the entity models (shared/models) and the
feature packages' own (shared/adoption/model.py)."""

from shared.adoption.model import ImportCheckpoint, LegacyProjectId
from shared.models import Base

__all__ = ["Base", "ImportCheckpoint", "LegacyProjectId"]
