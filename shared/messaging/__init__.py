"""The Celery app both sides share, task names and queues, queue depth."""
