"""The S3 archive of run logs: one JSON object per run (not one per line).

Key layout follows the old service's prefix scheme so retention and existing tooling that
walk `{prefix}/logs/{YYYY}/{MM}/{DD}/{run_id}/{code_id}/` keep working.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from shared.settings import Settings


class LogArchive:
    def __init__(self, settings: Settings) -> None:
        import boto3  # heavy: only where logs are archived
        from botocore.config import Config

        self.enabled = settings.s3_enabled
        self.bucket = settings.s3_bucket_name
        self.prefix = settings.s3_prefix
        credentials: dict[str, str] = {}
        if settings.s3_access_key_id:
            credentials = {
                "aws_access_key_id": settings.s3_access_key_id,
                "aws_secret_access_key": settings.s3_secret_access_key,
            }
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint or None,
            region_name=settings.s3_region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3),
            **credentials,
        )

    def key_for(self, run_id: str, code_id: str, day: datetime) -> str:
        return f"{self.prefix}/logs/{day:%Y/%m/%d}/{run_id}/{code_id}/logs.json"

    def ensure_bucket(self) -> None:
        if not self.enabled:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self.client.exceptions.ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_run_logs(
        self, run_id: str, code_id: str, day: datetime, logs: list[dict[str, Any]]
    ) -> str | None:
        """Write a run's logs as one object; returns its key (None when nothing to write)."""
        if not self.enabled or not logs:
            return None
        key = self.key_for(run_id, code_id, day)
        body = json.dumps(logs, default=str, ensure_ascii=False).encode()
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
        )
        return key

    def get_run_logs(self, key: str) -> list[dict[str, Any]]:
        obj = self.client.get_object(Bucket=self.bucket, Key=key)
        return json.loads(obj["Body"].read())

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    # --- retention ----------------------------------------------------------------------

    def delete_keys(self, keys: list[str]) -> int:
        """Delete these objects (1,000 per request); returns how many S3 confirmed."""
        if not self.enabled:
            return 0
        deleted = 0
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            answer = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": False},
            )
            deleted += len(answer.get("Deleted", []))
        return deleted

    def delete_days_before(self, day: date) -> int:
        """Delete every object under `{prefix}/logs/YYYY/MM/DD/` for days before `day`: the
        old service's one-object-per-log layout, and anything whose index row is gone."""
        if not self.enabled:
            return 0
        deleted = 0
        for folder in self._day_folders():
            try:
                folder_day = date(*(int(part) for part in folder.rstrip("/").split("/")[-3:]))
            except (TypeError, ValueError):
                continue  # not a YYYY/MM/DD folder: not ours to judge
            if folder_day < day:
                deleted += self.delete_keys(self._keys_under(folder))
        return deleted

    def _children(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            found += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
        return found

    def _day_folders(self) -> list[str]:
        days: list[str] = []
        for year in self._children(f"{self.prefix}/logs/"):
            for month in self._children(year):
                days += self._children(month)
        return days

    def _keys_under(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            entry["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for entry in page.get("Contents", [])
        ]
