"""Asset checks on every iteration: sample conservation, the cap, and a non-empty training set."""

import dagster as dg

from assets.iteration import iteration_key
from resources import ExperimentResource, StorageResource


def build_iteration_checks(t: int) -> list[dg.AssetChecksDefinition]:
    stage = f"iter_{t}"

    @dg.asset_check(
        asset=iteration_key(t, "verified_samples"),
        blocking=True,
        description="Every raw sample has exactly one verdict, and no verdict lacks a sample.",
    )
    def sample_conservation(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        root = storage.root()
        name = context.partition_key
        raw = root.read_table("raw_samples", name, stage)["sample_id"]
        ver = root.read_table("verified_samples", name, stage)["sample_id"]
        missing = len(set(raw) - set(ver))
        extra = len(set(ver) - set(raw))
        dupes = len(ver) - ver.n_unique()
        return dg.AssetCheckResult(
            passed=missing == extra == dupes == 0,
            metadata={"raw": len(raw), "verified": len(ver), "missing": missing, "extra": extra, "duplicates": dupes},
        )

    @dg.asset_check(
        asset=iteration_key(t, "training_set"),
        blocking=True,
        description="Only correct samples, at most max_per_problem per problem, and not empty.",
    )
    def cap_holds(
        context: dg.AssetCheckExecutionContext, storage: StorageResource, experiment: ExperimentResource
    ) -> dg.AssetCheckResult:
        df = storage.root().read_table("training_set", context.partition_key, stage)
        worst = int(df.group_by("problem_id").len()["len"].max() or 0)
        wrong = int((df["reward"] != 1.0).sum()) if len(df) else 0
        return dg.AssetCheckResult(
            passed=bool(len(df)) and worst <= experiment.max_per_problem and wrong == 0,
            metadata={
                "examples": len(df),
                "max_per_problem_observed": worst,
                "cap": experiment.max_per_problem,
                "not_correct": wrong,
            },
        )

    return [sample_conservation, cap_holds]


__all__ = ["build_iteration_checks"]
