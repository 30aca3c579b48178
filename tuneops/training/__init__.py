"""Training: the shared loop, what a family hands it, the engine, base models, distributed workers, search."""
