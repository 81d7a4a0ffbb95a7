"""``StorageResource``: the data root that every asset reads and writes (Parquet, checkpoints, reports)."""

import dagster as dg

from restem_pipeline.storage.tables import SHARED, DataRoot


class StorageResource(dg.ConfigurableResource):
    """Where tables, models and reports live. Empty means ``$RESTEM_DATA_ROOT`` or ``./data``,
    resolved when a run uses it."""

    data_root: str = ""

    def root(self, experiment: str = SHARED) -> DataRoot:
        """The data root, bound to ``experiment`` (default: what every experiment shares)."""
        return DataRoot(self.data_root or None, experiment)
