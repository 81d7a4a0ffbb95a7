"""A held-out evaluation cut short resumes from its committed jobs to the tables of an uninterrupted one.

``evaluate(parts_dir=...)`` commits each of its four jobs (test greedy, test sampled, validation greedy,
train greedy) once verified; a later call with the same fingerprint reuses them and runs only the rest.
Checked on the trained tiny model with the transformers sampler: the resumed tables equal an
uninterrupted evaluation's (computed without parts), the sampler is called only for the jobs that were
not committed, a changed setting discards every part, a corrupt part is run again. At the asset level
(a real Dagster run of ``baselines/base_eval_report``): the parts are removed once the tables are stored,
and with the run tag ``restem/reuse_stored_evaluations`` (what ``restem experiment paper`` sets, so a
seed cut short resumes) a stored evaluation with the same fingerprint is reused, while another model's
content runs it again.
"""

import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from assets.common import REUSE_EVALUATIONS
from assets.definitions import build_definitions
from resources import ExperimentResource, StorageResource
from restem_pipeline.evaluation.evaluate import EvalConfig, evaluate, evaluation_fingerprint
from restem_pipeline.experiments import Experiment
from restem_pipeline.generation.sampling import TransformersSampler
from restem_pipeline.stages import problems_frame
from restem_pipeline.storage.tables import DataRoot

CFG = EvalConfig(k=3, max_new_tokens=24, train_subset=4)


class Cut(Exception):
    """Stands for a session's end part-way through an evaluation."""


class Counting:
    """The real sampler, with its calls counted (and, with ``cut_at``, the run cut before that call)."""

    def __init__(self, sampler, cut_at: int | None = None):
        self.sampler, self.cut_at, self.calls = sampler, cut_at, 0

    def generate(self, prompts, params, progress=None):
        self.calls += 1
        if self.calls == self.cut_at:
            raise Cut(f"cut before call {self.calls}")
        return self.sampler.generate(prompts, params, progress)


@pytest.fixture(scope="module")
def setting(tiny_base, tiny_problems):
    probs = (
        [p for p in tiny_problems if p.split == "test"][:6]
        + [p for p in tiny_problems if p.split == "validation"][:3]
        + [p for p in tiny_problems if p.split == "train"][:6]
    )
    sampler = TransformersSampler(tiny_base, batch_size=64)
    full = evaluate(sampler, probs, CFG)  # no parts: the uninterrupted reference
    return sampler, probs, full, tiny_base


def parts_of(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("shard-*.parquet"))


def test_a_cut_evaluation_resumes_to_the_uninterrupted_tables(setting, tmp_path):
    sampler, probs, (full_samples, full_summary), model = setting
    fp = evaluation_fingerprint(probs, CFG, model, {"sampler": "transformers"})
    cut = Counting(sampler, cut_at=3)  # test greedy and test sampled done, validation cut
    with pytest.raises(Cut):
        evaluate(cut, probs, CFG, parts_dir=tmp_path, fingerprint=fp)
    assert parts_of(tmp_path) == ["shard-00000.parquet", "shard-00001.parquet"]

    logged: list[str] = []
    resumed = Counting(sampler)
    samples, summary = evaluate(resumed, probs, CFG, parts_dir=tmp_path, fingerprint=fp, log=logged.append)
    assert resumed.calls == 2  # validation and train only
    assert sum("rows reused" in line for line in logged) == 2
    assert_frame_equal(samples, full_samples)
    assert_frame_equal(summary, full_summary)
    assert len(samples.filter(pl.col("kind") == "sample")) == 6 * 3  # 6 test problems x K = 3


def test_a_changed_setting_discards_every_part(setting, tmp_path):
    sampler, probs, _, model = setting
    fp = evaluation_fingerprint(probs, CFG, model)
    evaluate(sampler, probs, CFG, parts_dir=tmp_path, fingerprint=fp)
    assert len(parts_of(tmp_path)) == 4

    other = EvalConfig(k=3, max_new_tokens=16, train_subset=4)
    fp2 = evaluation_fingerprint(probs, other, model)
    assert fp2 != fp
    logged: list[str] = []
    again = Counting(sampler)
    evaluate(again, probs, other, parts_dir=tmp_path, fingerprint=fp2, log=logged.append)
    assert again.calls == 4
    assert any("fingerprint changed (eval_config)" in line and "discarding 4" in line for line in logged)


def test_a_corrupt_part_is_run_again_and_the_tables_still_match(setting, tmp_path):
    sampler, probs, (full_samples, _), model = setting
    fp = evaluation_fingerprint(probs, CFG, model)
    evaluate(sampler, probs, CFG, parts_dir=tmp_path, fingerprint=fp)
    (tmp_path / "shard-00001.parquet").write_bytes(b"PAR1 half a file")
    logged: list[str] = []
    again = Counting(sampler)
    samples, _ = evaluate(again, probs, CFG, parts_dir=tmp_path, fingerprint=fp, log=logged.append)
    assert again.calls == 1
    assert any(line.startswith("shard-00001.parquet is not trusted") for line in logged)
    assert_frame_equal(samples, full_samples)


def test_parts_without_a_fingerprint_are_refused(setting, tmp_path):
    sampler, probs, _, _ = setting
    with pytest.raises(ValueError, match="needs the evaluation_fingerprint"):
        evaluate(sampler, probs, CFG, parts_dir=tmp_path)


def materialize_base_eval(root: Path, base: Path, problems) -> tuple[dict, list[str]]:
    """One real run of ``baselines/base_eval_report`` with reuse on; (its report, its log messages)."""
    DataRoot(root).write_table(problems_frame(problems), "problems", "tiny", "ingest")
    experiment = ExperimentResource(base_model=str(base), max_new_tokens=24, eval_k=2, eval_train_subset=4, seed=0)
    defs = build_definitions(
        [Experiment("restem", iterations=1)],
        resources={"storage": StorageResource(data_root=str(root)), "experiment": experiment},
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["tiny"])
    job = defs.resolve_implicit_global_asset_job_def()
    key = dg.AssetKey(["baselines", "base_eval_report"])
    result = job.execute_in_process(
        instance=instance, partition_key="tiny", asset_selection=[key], tags={REUSE_EVALUATIONS: "true"}
    )
    assert result.success
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    return json.loads(DataRoot(root).report_path("tiny", "base", ".json").read_text()), logs


@pytest.mark.slow
def test_a_stored_evaluation_is_reused_only_for_the_same_model(tmp_path, tiny_base, tiny_problems, memorized_base):
    probs = [p for p in tiny_problems if p.split != "train"][:8] + [p for p in tiny_problems if p.split == "train"][:4]
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    first, logs = materialize_base_eval(tmp_path / "data", base, probs)
    assert not first["reused"] and not any("reused" in m for m in logs)
    assert not any((tmp_path / "data").glob("shards/**/shard-*.parquet"))  # the parts went with the tables

    again, logs = materialize_base_eval(tmp_path / "data", base, probs)
    assert again["reused"] and any("the stored evaluation has this fingerprint" in m for m in logs)
    assert (again["metrics"], again["fingerprint"]) == (first["metrics"], first["fingerprint"])

    shutil.rmtree(base)
    shutil.copytree(memorized_base, base)  # same path, other weights: a retrained checkpoint
    other, logs = materialize_base_eval(tmp_path / "data", base, probs)
    assert not other["reused"] and other["fingerprint"]["model"] != first["fingerprint"]["model"]
    assert other["fingerprint"]["model"]["path"] == first["fingerprint"]["model"]["path"]
