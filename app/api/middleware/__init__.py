"""ASGI middleware: run before routing, so each sees every request (unknown paths included)."""
