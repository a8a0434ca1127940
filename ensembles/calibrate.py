"""One temperature per member, fitted on ``select`` before members are combined.

Trials of one search differ in how confident they are (a trial trained with strong L2 can be right
96% of the time with probabilities near uniform), so an average of their probabilities or logits is
dominated by the most confident members rather than the most accurate. Dividing each member's
logits by its own temperature (Guo et al. 2017, fitted as a one-dimensional minimisation of its NLL
on ``select``) puts every member on a comparable footing before selection and combination. The
artifact applies the same temperatures (:class:`ensembles.layers.Combine`'s ``member_temperatures``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ensembles.combine import fit_temperature
from ensembles.metrics import log_softmax
from ensembles.pool import Pool


def member_temperatures(pool: Pool) -> dict[str, np.ndarray]:
    """Per classification head, each member's temperature minimising its own NLL on ``select``."""
    out: dict[str, np.ndarray] = {}
    for h in pool.heads:
        if not h.is_classification:
            continue
        z = pool.outputs["select"][h.name].astype(np.float64)
        y = pool.labels["select"][h.name]
        out[h.name] = np.array([fit_temperature(log_softmax(z[m]), y) for m in range(len(pool))])
    return out


def calibrated(pool: Pool, temperatures: dict[str, np.ndarray]) -> Pool:
    """A copy of ``pool`` whose classification logits (every split) are divided by each member's temperature."""
    outputs = {}
    for split, heads in pool.outputs.items():
        outputs[split] = {}
        for name, z in heads.items():
            t = temperatures.get(name)
            outputs[split][name] = z if t is None else (z / t.reshape(-1, 1, 1).astype(z.dtype))
    return dataclasses.replace(pool, outputs=outputs)
