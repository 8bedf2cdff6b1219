"""Everything that runs on the GPU owner's thread: the scheduler (queue, batching, the owner itself), the runner
(what the owner holds: model cache, refiner, VAEs, ControlNets), the pipeline calls, loading and LoRA adapters."""
