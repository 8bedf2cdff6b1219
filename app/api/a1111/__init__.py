"""The AUTOMATIC1111 surface's translation: its names, bodies and answers onto ours (routes/a1111_*.py use it)."""
