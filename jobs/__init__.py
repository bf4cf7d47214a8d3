"""Batch-scoring jobs as the submitting side and the workers share them: the job model, its
Redis store, the submit-side manager, the input readers and the Celery app configuration."""
