"""Accepted work: a job and its items (one per image), how requests become items under the limits, and the job
records other replicas read."""
