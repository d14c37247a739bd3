"""Evaluation: metrics (pure numpy), the run over a prepared dataset, and the report.

``metrics`` computes the numbers, ``run`` measures a bundle on a dataset split,
``report`` (with ``plots``, ``filters`` and ``html``) writes the pictures and the
index.html. Nothing here imports torch; matplotlib is loaded only for a report.
"""
