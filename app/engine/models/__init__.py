"""Which models exist: the registry (built-ins, the models file, the LoRA folder), samplers by name, the /models
view, and the offline tiny models."""
