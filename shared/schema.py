"""Every table, for Alembic and for whoever needs the whole metadata: importing this module
imports each feature's model (SPEC.md "Entities")."""

from shared.access.permission import UserPermission
from shared.access.project import Project
from shared.adoption.model import ImportCheckpoint, LegacyProjectId
from shared.after_commit.outbox import OutboxEntry
from shared.codelibs.model import CodeLib
from shared.codes.model import Code
from shared.logs.chunks import CodeLogChunk
from shared.logs.count import CodeLogCount
from shared.logs.model import CodeLog
from shared.orm import Base
from shared.runs.model import CodeRun

__all__ = [
    "Base", "Code", "CodeLib", "CodeLog", "CodeLogChunk", "CodeLogCount", "CodeRun",
    "ImportCheckpoint", "LegacyProjectId", "OutboxEntry", "Project", "UserPermission",
]
