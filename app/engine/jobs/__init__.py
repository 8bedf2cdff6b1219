"""Accepted work: a job and its items (one per image), how requests become items under the limits, the job
records other replicas read, the leases that tell them whether a job's process is still alive, and one poll per
followed job."""
