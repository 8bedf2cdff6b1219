"""Benchmarks of sdxl-serve on the built-in tiny model (CPU, 256x256, 4 steps): `make bench` or `python -m bench`.

Not part of the test suite. Modules:

- workload.py   the one request every benchmark sends, fresh seeds, the bare diffusers pipeline
- server.py     the service under test, in its own process, on 127.0.0.1 (plus the bench's owner clock)
- throughput.py closed-loop HTTP clients and bare-pipeline batches: images/s
- latency.py    one request vs the bare call; /health and /download latency and owner idle share under load
- report.py     the targets, the printed tables, results.json and results.png
"""
