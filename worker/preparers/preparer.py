"""Per-language preparation of a job before it reaches a sandbox (e.g. Go compilation).

A preparer turns a code's source into extra job fields (engines/PROTOCOL.md); it never sees
platform credentials either. Languages without one (Python, JavaScript) send the source.
"""

from __future__ import annotations

from typing import Any, Protocol


class PreparationError(Exception):
    """The code cannot run (e.g. it does not compile); the message is shown to the user."""


class CodePreparer(Protocol):
    def job_fields(self, source: str, compat: str = "strict") -> dict[str, Any]:
        """Extra fields for the job of a code in that compat mode; raises PreparationError
        with a user-facing message."""
        ...
