"""Following a submitted job to its end, with a progress bar of its denoising steps on stderr."""

from __future__ import annotations

import contextlib
import sys

from tqdm import tqdm

from app.client import Client, JobResponse, SdxlError


def _label(job: JobResponse) -> str:
    if job.status == "queued" and job.queue_position:
        return f"queued ({job.queue_position} ahead)"
    return job.status


def follow(client: Client, job: JobResponse, *, quiet: bool) -> JobResponse:
    """The job's terminal state, read from `GET /jobs/{id}/events`. Ctrl-C cancels the job before it stops us.

    The bar is drawn only on a terminal: redirected stderr (logs, CI) stays clean, as does --quiet."""
    show = not quiet and sys.stderr.isatty()
    latest = job
    with tqdm(total=job.progress.total, desc=_label(job), unit="step", file=sys.stderr, disable=not show) as bar:
        try:
            for latest in client.job_events(job.id):
                bar.set_description(_label(latest), refresh=False)
                bar.update(latest.progress.step - bar.n)
        except KeyboardInterrupt:
            # Nobody will collect the images: free the GPU for others. Best effort; we are stopping anyway.
            with contextlib.suppress(SdxlError):
                client.cancel_job(job.id)
            raise
    return latest
