"""Generation: the Sampler interface, the CPU engine, vLLM, and loading/building models."""
