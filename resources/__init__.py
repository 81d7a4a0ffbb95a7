"""Dagster resources: typed, configurable wrappers around the restem core.

Settings are read when a resource is built (or first used in a run), never at import.
"""

from resources.checks import ChecksResource
from resources.distill import DistillResource
from resources.experiment import ExperimentResource
from resources.models import SamplerResource, TrainerResource
from resources.storage import StorageResource

__all__ = [
    "ChecksResource",
    "DistillResource",
    "ExperimentResource",
    "SamplerResource",
    "StorageResource",
    "TrainerResource",
]
