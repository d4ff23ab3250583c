"""Every table, for Alembic and for whoever needs the whole metadata: importing this module
imports each feature's model (SPEC.md "Entities")."""

from shared.access.permission import UserPermission
from shared.access.project import Project
from shared.codelibs.model import CodeLib
from shared.codes.model import Code
from shared.logs.count import CodeLogCount
from shared.logs.model import CodeLog
from shared.orm import Base
from shared.runs.model import CodeRun

__all__ = [
    "Base", "Code", "CodeLib", "CodeLog", "CodeLogCount", "CodeRun", "Project", "UserPermission",
]
