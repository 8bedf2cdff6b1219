"""One file per resource; each exposes `router`."""
