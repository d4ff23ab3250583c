"""Retention: runs, their log index rows and their S3 objects older than the period go.

In batches, one transaction per batch: a crash midway leaves whole batches done and the
rest for the next time. S3 objects are deleted after their rows are gone (an object without
a row is harmless and swept with its day folder; a row pointing at nothing would not be).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.db import Database
from shared.logs import store as log_store
from shared.logs.archive import LogArchive
from shared.runs import store as run_store

log = logging.getLogger(__name__)


@dataclass
class CleanReport:
    cutoff: str
    runs: int = 0
    logs: int = 0
    objects: int = 0


def clean(db: Database, archive: LogArchive, cutoff: datetime, batch_size: int) -> CleanReport:
    """Delete everything created before `cutoff`."""
    report = CleanReport(cutoff=cutoff.isoformat())
    while True:
        with db.session() as session:
            run_ids = run_store.created_before(session, cutoff, batch_size)
            if not run_ids:
                break
            keys = [
                archive.key_for(str(run_id), str(code_id), first_log.astimezone(UTC))
                for run_id, code_id, first_log in log_store.archive_keys_of(session, run_ids)
            ]
            report.logs += log_store.delete_for_runs(session, run_ids)
            report.runs += run_store.delete(session, run_ids)
            session.commit()
        try:
            report.objects += archive.delete_keys(keys)
        except Exception as exc:  # the day sweep below, or tomorrow's, gets them
            log.warning("deleting %d archived log objects failed: %s", len(keys), exc)
        log.info("retention: %d runs so far", report.runs)
    try:
        report.objects += archive.delete_days_before(cutoff.astimezone(UTC).date())
    except Exception as exc:
        log.warning("sweeping old archive folders failed: %s", exc)
    return report
