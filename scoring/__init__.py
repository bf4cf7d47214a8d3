"""The scoring layer: errors and their status table, settings and limits, ranking, and the
model backends. The gateway (``service``), the job layer (``jobs``) and the workers build on it."""
