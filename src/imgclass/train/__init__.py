"""Training: configuration, the torch trainer, augmentation and the `imgclass train` pipeline.

- ``config``: ``TrainConfig`` and ``resolve_config`` (family defaults, YAML, ``--set``);
- ``trainer``: ``Trainer``, one loop for every torch family;
- ``batches``: where batches come from (arrays in memory, or the prepared store);
- ``augment``: seeded, batched augmentation on tensors;
- ``optim``, ``checkpoint``, ``distributed``: what the trainer is built from;
- ``run``: ``train(data_dir, out, cfg)``, dataset to bundle.

Import the submodules directly; this package imports nothing heavy.
"""
