"""Taking over a deployment of the old Go service (issue #12): its PostgreSQL schema
(`codeactions migrate`), its S3 logs (`codeactions import-logs`) and its MongoDB-era data
(`codeactions import-mongo`). Nothing here runs at import time."""
