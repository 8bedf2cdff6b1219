"""The command line's commands: `serve` runs the service; `generate`, `refine`, `download` and `models` talk to
a running one through app.client. Each module adds its parsers; app/__main__.py only assembles them."""
