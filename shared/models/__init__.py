"""SQLAlchemy models, one module per entity (SPEC.md "Entities")."""

from shared.models.base import Base
from shared.models.code import Code
from shared.models.code_log_count import CodeLogCount
from shared.models.codelib import CodeLib
from shared.models.codelog import CodeLog
from shared.models.coderun import CodeRun
from shared.models.project import Project
from shared.models.user_permission import UserPermission

__all__ = [
    "Base", "Code", "CodeLib", "CodeLog", "CodeLogCount", "CodeRun", "Project", "UserPermission",
]

