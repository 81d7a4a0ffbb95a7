"""``StorageResource``: the data root that every asset reads and writes (Parquet, checkpoints, reports)."""

import dagster as dg

from restem_pipeline.storage import DataRoot


class StorageResource(dg.ConfigurableResource):
    """Where tables, models and reports live. Empty means ``$RESTEM_DATA_ROOT`` or ``./data``,
    resolved when a run uses it."""

    data_root: str = ""

    def root(self) -> DataRoot:
        return DataRoot(self.data_root or None)
