"""Experiments as data: the shipped files load, a bad file is an error naming the file and the field
(nothing loaded), a new file is a new graph, and two experiments' samples are one SQL query apart."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets.cli import main
from assets.definitions import build_definitions, experiments_from
from restem_pipeline.experiments import Experiment, ExperimentError, load_experiments, train_subset
from restem_pipeline.storage.tables import DataRoot, query

SHIPPED = Path(__file__).resolve().parents[1] / "experiments"


def test_every_shipped_experiment_file_loads_with_its_settings():
    exps = {e.name: e for e in experiments_from(SHIPPED)}
    assert set(exps) == {p.stem for p in SHIPPED.glob("*.yaml")} >= {"restem", "rest", "distill", "restem_3x"}
    assert (exps["restem"].init_from, exps["restem"].policy, exps["restem"].iterations) == ("base", "previous", 3)
    assert (exps["rest"].init_from, exps["rest"].iterations) == ("previous", 3)
    assert exps["distill"].policy == "teacher" and exps["distill"].iterations == 1
    assert exps["restem_3x"].iterations == 1
    assert exps["restem_3x"].overrides("experiment") == {"samples_per_problem": 24}  # 3x the default N of 8
    for e in exps.values():
        assert e.description and e.source.endswith(f"{e.name}.yaml")
    assert len(build_definitions(list(exps.values())).resolve_asset_graph().get_all_asset_keys()) > 40


def _folder(tmp_path, **files: str) -> Path:
    shutil.copytree(SHIPPED, tmp_path / "exps")
    for name, text in files.items():
        (tmp_path / "exps" / f"{name}.yaml").write_text(text)
    return tmp_path / "exps"


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("iterations: 0\n", "iterations", "must be an integer in 1..50, got 0"),
        ("iterations: two\n", "iterations", "must be an integer"),
        ("init_from: last\n", "init_from", "must be one of base, previous, got 'last'"),
        ("policy: oracle\n", "policy", "must be one of previous, teacher"),
        ("train_fraction: 1.5\n", "train_fraction", "must be a number in (0, 1]"),
        ("iteratons: 2\n", "iteratons", "no such field"),
        ("name: Bad-Name\n", "name", "lower-case letters"),
        ("name: shared\n", "name", "reserved"),
        ("name: rest\n", "name", "also the name in"),
        ("policy: teacher\ninit_from: previous\n", "init_from", "distillation"),
        (
            "settings:\n  experiment:\n    sampels_per_problem: 4\n",
            "settings.experiment.sampels_per_problem",
            "no such field",
        ),
        ("settings:\n  experiment:\n    temperature: 9\n", "settings.experiment", "temperature must be in (0, 2]"),
        ("settings:\n  trainer:\n    max_steps: lots\n", "settings.trainer.max_steps", ""),
        ("settings:\n  experiment:\n    base_model: other\n", "settings.experiment.base_model", "shared by every"),
        ("settings:\n  teacher: {}\n", "settings.teacher", "unknown resource"),
        ("settings:\n  sampler: {backend: vllm}\n", "settings.sampler", "set for the deployment"),
        ("- 1\n", "(top level)", "expected a mapping"),
        ("iterations: [1\n", "(file)", "cannot read it as YAML"),
    ],
)
def test_a_malformed_file_names_the_file_and_field_and_loads_nothing(tmp_path, text, field, message):
    folder = _folder(tmp_path, zz_bad=text)
    with pytest.raises(ValueError) as e:
        build_definitions(experiments_from(folder))
    msg = str(e.value)
    assert str(folder / "zz_bad.yaml") in msg and field in msg and message in msg, msg


def test_a_new_file_is_a_new_graph_on_reload(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    monkeypatch.setenv("RESTEM_EXPERIMENTS", str(folder))
    before = build_definitions().resolve_asset_graph().get_all_asset_keys()
    (folder / "half.yaml").write_text("description: half the problems\niterations: 2\ntrain_fraction: 0.5\n")
    after = build_definitions().resolve_asset_graph().get_all_asset_keys()
    new = {k.to_user_string() for k in after - before}
    assert {"half/iter_1/raw_samples", "half/iter_2/checkpoint", "half/summary"} <= new
    assert all(k.startswith("half/") for k in new)


def test_train_fraction_is_a_seeded_subset():
    ids = [f"p{i}" for i in range(100)]
    half = train_subset(ids, 0.5, seed=3)
    assert len(half) == 50 and half <= set(ids)
    assert half == train_subset(list(reversed(ids)), 0.5, seed=3)  # the order given does not matter
    assert half != train_subset(ids, 0.5, seed=4)
    assert train_subset(ids, 1.0, 0) == set(ids) and len(train_subset(ids, 0.001, 0)) == 1


def test_an_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ExperimentError, match="no experiment files"):
        load_experiments(tmp_path)
    with pytest.raises(ExperimentError, match="no experiments folder"):
        load_experiments(tmp_path / "nope")


@pytest.mark.slow
def test_two_experiments_are_one_sql_query_apart(tmp_path, tiny_base, tiny_problems, capsys):
    """ReST-EM and ReST, one iteration each, through real Dagster runs; then the issue's query."""
    from resources import ExperimentResource, StorageResource, TrainerResource
    from restem_pipeline.stages import problems_frame

    root = DataRoot(tmp_path)
    root.write_table(problems_frame(tiny_problems), "problems", "tiny", "ingest")
    exps = [Experiment("restem", iterations=1), Experiment("rest", iterations=1, init_from="previous")]
    defs = build_definitions(
        exps,
        resources={
            "storage": StorageResource(data_root=str(tmp_path)),
            "experiment": ExperimentResource(
                base_model=str(tiny_base), samples_per_problem=2, max_new_tokens=24, seed=0
            ),
            "trainer": TrainerResource(max_steps=2, batch_size=4),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["tiny"])
    keys = [dg.AssetKey([e.name, "iter_1", k]) for e in exps for k in ("raw_samples", "verified_samples")]
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, partition_key="tiny", asset_selection=keys).success
    # the issue's query, through the command line
    issue_query = "SELECT experiment, stage, avg(reward) FROM verified_samples GROUP BY ALL"
    assert main(["sql", issue_query, "--data-root", str(tmp_path), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "experiment,stage,avg(reward)" and len(lines) == 3
    assert {tuple(line.split(",")[:2]) for line in lines[1:]} == {("restem", "iter_1"), ("rest", "iter_1")}
    df = query("SELECT experiment, stage, avg(reward) AS r, count(*) AS n FROM verified_samples GROUP BY ALL", root)
    rows = {(r["experiment"], r["stage"]): r for r in df.iter_rows(named=True)}
    assert set(rows) == {("restem", "iter_1"), ("rest", "iter_1")}
    n_train = sum(p.split == "train" for p in tiny_problems)
    for exp in exps:  # each experiment's own table, with its own rows
        ver = root.of(exp.name).read_table("verified_samples", "tiny", "iter_1")
        assert rows[(exp.name, "iter_1")]["n"] == len(ver) == 2 * n_train
        assert rows[(exp.name, "iter_1")]["r"] == pytest.approx(ver["reward"].mean())
        assert set(ver["experiment"]) == {exp.name}


@pytest.mark.slow
def test_transfer_evaluates_on_another_problem_set_and_the_summary_shows_it(tmp_path, tiny_base, tiny_problems):
    """``transfer: [other]``: the base model (iteration 0) of an experiment trained on ``tiny`` is evaluated
    on problem set ``other`` (a different set of problems), stored under the experiment, and summarized."""
    import json

    from resources import ExperimentResource, StorageResource
    from restem_pipeline.stages import problems_frame

    root = DataRoot(tmp_path)
    other = [p for p in tiny_problems if p.level == 2]  # a smaller, harder set
    root.write_table(problems_frame(tiny_problems), "problems", "tiny", "ingest")
    root.write_table(problems_frame(other), "problems", "other", "ingest")
    exp = Experiment("restem", iterations=1, transfer=("other",))
    defs = build_definitions(
        [exp],
        resources={
            "storage": StorageResource(data_root=str(tmp_path)),
            "experiment": ExperimentResource(
                base_model=str(tiny_base), max_new_tokens=24, eval_k=2, eval_train_subset=4, seed=0
            ),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["tiny"])
    keys = [
        dg.AssetKey(["baselines", "base_eval_report"]),
        dg.AssetKey(["restem", "iter_0", "transfer_other"]),
        dg.AssetKey(["restem", "summary"]),
    ]
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, partition_key="tiny", asset_selection=keys).success
    mine = root.of("restem")
    samples = mine.read_table("eval_samples", "tiny", "iter_0_on_other")
    held_out = {p.id for p in other if p.split != "train"}
    assert held_out <= set(samples["problem_id"]) <= {p.id for p in other}  # the other set's problems
    report = json.loads(mine.report_path("tiny", "iter_0_on_other", ".json").read_text())
    assert (report["evaluated_on"], report["problem_set"], report["experiment"]) == ("other", "tiny", "restem")
    greedy_test = samples.filter((samples["split"] == "test") & (samples["kind"] == "greedy"))["reward"]
    assert report["metrics"]["test/pass@1"] == pytest.approx(greedy_test.mean())  # from its own samples
    summary = json.loads(mine.report_path("tiny", "summary", ".json").read_text())
    (row,) = summary["transfer"]
    assert (row["model"], row["evaluated on"]) == ("base", "other")
    assert row["test pass@1"] == pytest.approx(report["metrics"]["test/pass@1"])
