"""Every record of a store split measured (``ecgtool.measure``), in the store's record order: what
``calibrate`` fits the model-and-measurement combination on (``ecgtool.combined_calibration``) and
``bench`` scores it with."""

from __future__ import annotations

import numpy as np

from ecgtool.measure import Measurements, measure
from ecgtool.store import Store


def measure_split(store: Store, split: str, keep: np.ndarray | None = None) -> list[Measurements | None]:
    """The measurements of every record of ``split`` in ``store.shards`` order (the order of
    ``ecgtool.split_embeddings.embed_split``); with ``keep`` (a boolean mask over those records)
    only the kept ones are measured and the others are None."""
    measured: list[Measurements | None] = []
    for shard in store.shards(split):
        for row in range(len(shard.record_id)):
            index = len(measured)
            if keep is not None and not keep[index]:
                measured.append(None)
                continue
            measured.append(measure(np.asarray(shard.signal[row], dtype=np.float32)))
    return measured
