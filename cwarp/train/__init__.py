"""The training stack: config, methods, trainer, models, optimizers, checkpoints, CLI."""
