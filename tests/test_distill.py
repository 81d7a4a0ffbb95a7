"""Distillation through real Dagster: a bigger teacher samples, the base model (the student) learns.

The teacher is named by a local path, the way a user names their own: built here with the bigger
architecture ``DistillResource.teacher_config`` gives, trained from a random init to memorize the train
problems' worked solutions (``conftest.memorize``), so its samples include correct ones by construction
(the fixture bounds the chance that none is correct below 1e-12 on the machine it runs on) and the
student's checkpoint is never stopped by the blocking ``training_set_not_empty``. The embedded-teacher
branch is run separately with a few pretraining steps. Real Parquet, real fine-tuning, real reports.
Not covered: whether distillation helps (the paper reproduction, ``restem experiment paper``).
"""

import json

import dagster as dg
import pytest
from conftest import TINY_BASE, memorize
from tiny_defs import TEST_SEED, TINY_EXPERIMENT

from assets.definitions import build_definitions
from assets.experiment import experiment_key, iteration_key
from resources import DistillResource, ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.experiments import Experiment
from restem_pipeline.generation.modeling import count_parameters, load_model
from restem_pipeline.stages import weight_change
from restem_pipeline.storage import tables as storage
from restem_pipeline.training.finetune import TrainConfig

pytestmark = pytest.mark.slow

N, CAP = TINY_EXPERIMENT["samples_per_problem"], TINY_EXPERIMENT["max_per_problem"]  # what the teacher is proven for
# bigger than the tiny base (hidden 64, 2 layers), same tokenizer
TEACHER_SETTINGS = {
    "teacher_hidden_size": 128,
    "teacher_layers": 3,
    "teacher_heads": 2,
    "teacher_intermediate_size": 384,
}
# memorizing the worked solutions (conftest.MEMORIZE's recipe, at a rate for 5x the parameters): measured,
# loss 6.0 -> 0.0003 and every p above 0.999 in 40 s on 1 thread (the 300-step pretraining it replaces: minutes)
MEMORIZE_TEACHER = TrainConfig(
    max_steps=150, batch_size=64, learning_rate=3e-3, lr_schedule="constant", dtype="float32", seed=TEST_SEED
)
DISTILL = Experiment("distill", iterations=1, policy="teacher")  # as experiments/distill.yaml
DISTILL_KEYS = [experiment_key("distill", "teacher_model"), experiment_key("distill", "teacher_eval_report")] + [
    iteration_key(1, k, "distill")
    for k in ("raw_samples", "verified_samples", "training_set", "checkpoint", "eval_report")
]


def _experiment(base, **overrides) -> ExperimentResource:
    return ExperimentResource(
        base_model=str(base), eval_train_subset=8, seed=TEST_SEED, **{**TINY_EXPERIMENT, **overrides}
    )


def _data_root(tmp_path_factory, problems):
    root = tmp_path_factory.mktemp("data")
    (root / "problem_sets").mkdir()
    with open(root / "problem_sets" / "tiny.jsonl", "w") as f:
        for p in problems:
            f.write(json.dumps(p.to_row()) + "\n")
    return root


def _materialize(root, experiment, distill, keys, raise_on_error=True):
    defs = build_definitions(
        [DISTILL],
        resources={
            "storage": StorageResource(data_root=str(root)),
            "experiment": experiment,
            "distill": distill,
            "trainer": TrainerResource(max_steps=12, batch_size=8, learning_rate=2e-3),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["tiny"])
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance, partition_key="tiny", asset_selection=keys, raise_on_error=raise_on_error
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_base, tiny_problems):
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    spec = DistillResource(**TEACHER_SETTINGS).teacher_config(TINY_BASE).spec
    return memorize(spec, tiny_base, tiny_problems, out, MEMORIZE_TEACHER, m_step=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_base, tiny_problems, teacher):
    root = _data_root(tmp_path_factory, tiny_problems)
    distill = DistillResource(**TEACHER_SETTINGS, teacher_model=str(teacher))
    keys = [dg.AssetKey("problem_set"), dg.AssetKey("base_model"), *DISTILL_KEYS]
    result = _materialize(root, _experiment(tiny_base), distill, keys)
    return result, storage.DataRoot(root, "distill"), tiny_base, teacher, tiny_problems


def _meta(result, key: str) -> dict:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == key]
    assert len(mats) == 1, key
    return {k: v.value for k, v in mats[0].materialization.metadata.items()}


def test_every_distillation_asset_is_materialized(run):
    result, *_ = run
    assert result.success
    done = {m.asset_key for m in result.get_asset_materialization_events()}
    assert set(DISTILL_KEYS) <= done
    assert not any(k.path[0] == "restem" for k in done)  # the experiment runs without the others


def test_teacher_is_bigger_than_the_student(run):
    _, _, base, teacher, _ = run
    assert count_parameters(load_model(teacher)) > 2 * count_parameters(load_model(base))


def test_samples_come_from_the_teacher(run):
    result, root, _, teacher, problems = run
    raw = root.read_table("raw_samples", "tiny", "iter_1")
    n_train = sum(p.split == "train" for p in problems)
    assert len(raw) == N * n_train and raw["sample_id"].n_unique() == len(raw)
    assert set(raw["model"]) == {str(teacher)}
    assert _meta(result, "distill/iter_1/raw_samples")["policy_model"] == str(teacher)
    ver = root.read_table("verified_samples", "tiny", "iter_1")
    assert sorted(ver["sample_id"]) == sorted(raw["sample_id"])


def test_training_set_is_correct_teacher_samples_under_the_cap(run):
    result, root, *_ = run
    kept = root.read_table("training_set", "tiny", "iter_1")
    dropped = root.read_table("dropped_samples", "tiny", "iter_1")
    raw = root.read_table("raw_samples", "tiny", "iter_1")
    assert len(kept) > 0 and (kept["reward"] == 1.0).all()
    assert kept.group_by("problem_id").len()["len"].max() <= CAP
    assert set(kept["sample_id"]) <= set(raw["sample_id"])
    assert len(kept) + len(dropped) == len(raw)
    assert _meta(result, "distill/iter_1/training_set")["examples"] == len(kept)


def test_student_is_the_base_fine_tuned_on_teacher_samples(run):
    result, root, base, teacher, _ = run
    meta = _meta(result, "distill/iter_1/checkpoint")
    assert meta["init_from"] == str(base)
    assert meta["examples"] == len(root.read_table("training_set", "tiny", "iter_1"))
    assert weight_change(base, root.model_dir("tiny", "iter_1")) > 1e-4


def test_student_and_teacher_reports_have_every_metric(run):
    result, root, _, teacher, _ = run
    for stage, key, model in [
        ("iter_1", "distill/iter_1/eval_report", str(root.model_dir("tiny", "iter_1"))),
        ("teacher", "distill/teacher_eval_report", str(teacher)),
    ]:
        meta = _meta(result, key)
        for metric in ("test/pass@1", "test/pass@2_sampled", "test/maj@2", "train/pass@1", "validation/pass@1"):
            assert 0.0 <= meta[metric] <= 1.0, (key, metric)
        report = json.loads(root.report_path("tiny", stage, ".json").read_text())
        assert report["stage"] == stage and report["model"] == model
        assert report["metrics"]["test/pass@1"] == meta["test/pass@1"]


def test_lineage_and_opt_in():
    g = build_definitions([DISTILL]).resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in g.get(dg.AssetKey.from_user_string(key)).parent_keys}

    assert parents("distill/teacher_model") == {"problem_set"}
    assert parents("distill/iter_1/raw_samples") == {"distill/teacher_model", "problem_set"}
    assert parents("distill/iter_1/training_set") == {"distill/iter_1/verified_samples"}
    # the student is the base model fine-tuned on the teacher's training set
    assert {"base_model", "distill/iter_1/training_set"} <= parents("distill/iter_1/checkpoint")
    assert "distill/teacher_model" not in parents("distill/iter_1/checkpoint")
    assert parents("distill/iter_1/eval_report") == {"distill/iter_1/checkpoint", "problem_set"}
    assert parents("distill/teacher_eval_report") == {"distill/teacher_model", "problem_set"}
    assert {g.get(k).group_name for k in DISTILL_KEYS} == {"distill_teacher", "distill_iter_1"}
    default_keys = build_definitions([Experiment("restem", iterations=1)]).resolve_asset_graph().get_all_asset_keys()
    assert not set(DISTILL_KEYS) & set(default_keys)


def test_embedded_teacher_is_pretrained_here_and_bigger(tmp_path_factory, tiny_base, tiny_problems):
    root = _data_root(tmp_path_factory, tiny_problems)
    experiment = _experiment(tiny_base, pretrain_pool_scale=0.01, pretrain_batch_size=16)
    distill = DistillResource(**{**TEACHER_SETTINGS, "teacher_pretrain_steps": 8})
    result = _materialize(
        root, experiment, distill, [dg.AssetKey("problem_set"), experiment_key("distill", "teacher_model")]
    )
    meta = _meta(result, "distill/teacher_model")
    path = storage.DataRoot(root, "distill").model_dir("tiny", "teacher")
    assert meta["built_here"] is True and meta["model"] == str(path) and meta["steps"] == 8
    assert meta["architecture"] == "Llama, hidden 128, 3 layers"
    assert meta["parameters"] == count_parameters(load_model(path)) > count_parameters(load_model(tiny_base))


def test_a_named_teacher_that_does_not_load_fails_naming_it(tmp_path_factory, tiny_base, tiny_problems):
    root = _data_root(tmp_path_factory, tiny_problems)
    missing = root / "no_such_teacher"
    distill = DistillResource(teacher_model=str(missing))
    keys = [dg.AssetKey("problem_set"), experiment_key("distill", "teacher_model")]
    result = _materialize(root, _experiment(tiny_base), distill, keys, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    assert f"teacher_model {str(missing)!r} cannot be loaded" in str(failures[0].event_specific_data.error.message)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"teacher_hidden_size": 250}, "teacher_hidden_size 250 is not divisible by teacher_heads 4"),
        ({"teacher_layers": 0}, "teacher_layers must be >= 1, got 0"),
        ({"teacher_pretrain_steps": -1}, "teacher_pretrain_steps must be >= 0, got -1"),
        ({"teacher_model": " "}, "teacher_model must be 'embedded' or a model id / path"),
    ],
)
def test_distill_resource_rejects_bad_values(settings, message):
    with pytest.raises(Exception, match=message):
        DistillResource(**settings)
