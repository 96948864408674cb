"""GPU workers: model adapters, the sampler, and the Celery tasks that run jobs."""
