"""Dagster resources: typed, configurable wrappers around the restem core.

Settings are read when a resource is built (or first used in a run), never at import.
"""

from resources.experiment import ExperimentResource
from resources.models import SamplerResource, TrainerResource
from resources.storage import StorageResource

__all__ = ["ExperimentResource", "SamplerResource", "StorageResource", "TrainerResource"]
