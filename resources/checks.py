"""``ChecksResource``: the thresholds the asset checks (assets/checks.py) hold a run to.

Rates are fractions of an iteration's verified samples. Not covered: the checks themselves.
"""

import dagster as dg
from pydantic import Field, model_validator


class ChecksResource(dg.ConfigurableResource):
    """Most unscored verdicts an iteration may have before its training set is blocked."""

    max_invalid_gold_rate: float = Field(
        default=0.02, description="samples whose gold answer could not be parsed (a broken problem set)"
    )
    max_timeout_rate: float = Field(default=0.05, description="samples the math verifier timed out on")
    max_infra_error_rate: float = Field(default=0.01, description="samples the code sandbox failed to run")
    max_eval_unscored_rate: float = Field(
        default=0.02,
        description="evaluation verdicts left unscored (left out of pass@k, so the reported numbers rest on "
        "fewer problems); over this the (warning) check on the eval report fails",
    )
    validation_tolerance: float = Field(
        default=0.0,
        description="how far a checkpoint's validation pass@1 may fall below the base model's before the "
        "(warning) check fails",
    )

    @model_validator(mode="after")
    def _check(self) -> "ChecksResource":
        for name in (
            "max_invalid_gold_rate",
            "max_timeout_rate",
            "max_infra_error_rate",
            "max_eval_unscored_rate",
            "validation_tolerance",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        return self
