"""Evidence a reviewer would accept: per-seed draws around a shared base, settings files, confirmatory runs.

- each seed draws its own problems, none of them among the shared base's data seed's problems or its
  pretraining pool (hand-counted at small sizes; at the real sizes the pool would otherwise leak);
- a paper run refuses a shared base or teacher whose pool a later seed's draw would not skip;
- settings files: every bad field named with its file; a confirmatory file uncommitted or modified is
  refused (a temporary git repository), a committed one recorded with its commit;
- the report's label and settings commit, in the json and the markdown's title;
- held-out slices of real data sets: the earlier subsets' ids recomputed and left out.
"""

import json
import os
import subprocess

import polars as pl
import pytest

from assets.ingest import earlier_prompts, resolve_problem_set, subset
from assets.paper_settings import SettingsError, committed_version, load_paper_settings, provenance_of
from resources import ExperimentResource, StorageResource
from restem_pipeline.data import arith
from restem_pipeline.data.holdout import Earlier, HoldoutSpec, apply_holdout, holdout_ids, holdout_text, read_holdout
from restem_pipeline.data.schema import Problem
from restem_pipeline.evaluation import paper
from restem_pipeline.storage.tables import DataRoot

SMALL = {"arith_train": 10, "arith_validation": 5, "arith_test": 5, "pretrain_pool_scale": 0.01}


def _draw(tmp_path, **settings) -> list[Problem]:
    storage = StorageResource(data_root=str(tmp_path))
    return resolve_problem_set("arith", storage, ExperimentResource(**settings)).problems


def test_only_another_data_seed_is_excluded():
    assert ExperimentResource(seed=1, data_seed=1, base_data_seed=0).excluded_data_seed == 0
    assert ExperimentResource(seed=0, base_data_seed=0).excluded_data_seed is None  # the base's own seed
    assert ExperimentResource(seed=3).excluded_data_seed is None


def test_each_seed_draws_its_own_problems_around_the_shared_bases_pool_and_splits(tmp_path):
    base = _draw(tmp_path, seed=0, **SMALL)
    seed1 = _draw(tmp_path, seed=1, data_seed=1, base_data_seed=0, **SMALL)
    # what seed 0's base trained on: pool (70, 70, 30, 15, 15) at scale 0.01, disjoint from seed 0's 20 problems
    pool = {q for q, _ in arith.pretraining_pool(0, (70, 70, 30, 15, 15), {p.prompt for p in base})}
    skipped = earlier_prompts("arith", ExperimentResource(seed=1, data_seed=1, base_data_seed=0, **SMALL))
    assert len(pool) == 200 and skipped == pool | {p.prompt for p in base} and len(skipped) == 220
    assert not {p.prompt for p in seed1} & skipped
    seed2 = _draw(tmp_path, seed=2, data_seed=2, base_data_seed=0, **SMALL)
    assert not {p.prompt for p in seed2} & skipped and {p.prompt for p in seed1} != {p.prompt for p in seed2}
    for split, n in (("train", 2), ("validation", 1), ("test", 1)):  # levels still uniform
        assert sorted(p.level for p in seed1 if p.split == split) == sorted([1, 2, 3, 4, 5] * n)
    # the held-out transfer set: seed 1's skips seed 0's (its names never occur in the pool)
    storage = StorageResource(data_root=str(tmp_path))
    ood0 = resolve_problem_set("arith_ood", storage, ExperimentResource(seed=0, **SMALL)).problems
    ood1 = resolve_problem_set("arith_ood", storage, ExperimentResource(seed=1, base_data_seed=0, **SMALL)).problems
    assert not {p.prompt for p in ood1} & {p.prompt for p in ood0}


def test_at_the_real_sizes_a_later_seeds_test_set_would_share_problems_with_the_pool(tmp_path):
    """Why the exclusion: seed 1's 400 test problems, drawn plainly, include some of the 20,000 seed 0's base
    pretrained on (level 1 has few distinct problems); drawn around them, none."""
    base = _draw(tmp_path, seed=0)
    pool = {q for q, _ in arith.pretraining_pool(0, arith.POOL_PER_LEVEL, {p.prompt for p in base})}
    plain = {p.prompt for p in _draw(tmp_path, seed=1) if p.split == "test"}
    around = {p.prompt for p in _draw(tmp_path, seed=1, base_data_seed=0) if p.split == "test"}
    assert plain & pool and len(around) == 400 and not around & pool and not around & {p.prompt for p in base}


def test_a_shared_base_or_teacher_the_draws_would_not_skip_is_refused():
    from assets.demo import chosen_experiments
    from assets.paper_run import _check_shared_base

    exps = chosen_experiments(["restem", "distill"])
    with pytest.raises(SystemExit, match="set base_model=PATH too"):
        _check_shared_base("arith", exps, [1, 2], {"base_data_seed": 0}, {}, True)
    with pytest.raises(SystemExit, match="set base_data_seed=N too"):
        _check_shared_base("arith", exps, [1, 2], {"base_model": "/m/base"}, {}, True)
    with pytest.raises(SystemExit, match=r"teacher would be pretrained on data seed 1's pool.*distill.teacher_model"):
        _check_shared_base("arith", exps, [1, 2], {"base_model": "/m/base", "base_data_seed": 0}, {}, True)
    given = {"base_model": "/m/base", "base_data_seed": 0}
    _check_shared_base("arith", exps, [1, 2], given, {"teacher_model": "/m/teacher"}, True)
    _check_shared_base("arith", chosen_experiments(["restem"]), [1, 2], given, {}, True)
    _check_shared_base("arith", exps, [0, 1], {}, {}, True)  # seed 0 builds both: seed 1 skips seed 0's pool
    _check_shared_base("arith", exps, [1, 2], {"base_model": "/m/base"}, {}, False)  # a named model: no pool


def test_a_reused_base_must_have_been_built_beside_the_problems_its_data_seed_gives(tmp_path):
    from assets.paper_run import _check_base_draw

    root = DataRoot(tmp_path / "seed_0")
    base = root.model_dir("arith", "base")
    base.mkdir(parents=True)
    table = root.table_path("problems", "arith", "ingest")
    table.parent.mkdir(parents=True)
    sizes = {"arith_train": 5, "arith_validation": 5, "arith_test": 5}
    settings = {"seed": 1, "data_seed": 1, "base_model": str(base), "base_data_seed": 0, **sizes}
    built_beside = arith.embedded_problem_set(0, 5, 5, 5)
    pl.DataFrame({"prompt": [p.prompt for p in built_beside]}).write_parquet(table)
    _check_base_draw("arith", settings, {})
    other = arith.embedded_problem_set(0, 10, 5, 5)  # built beside 20 problems: its pool is not what 5/5/5 gives
    pl.DataFrame({"prompt": [p.prompt for p in other]}).write_parquet(table)
    with pytest.raises(SystemExit, match="built beside 20 problems that data seed 0 does not give"):
        _check_base_draw("arith", settings, {})
    _check_base_draw("arith", {**settings, "base_data_seed": None}, {})  # nothing skipped: nothing to check
    # a teacher that was never built (no distill experiment ran) beside a root with other problems: not checked.
    # (The headline confirmatory run, restem only, stopped here at its second seed before this was fixed.)
    teacher = root.of("distill").model_dir("arith", "teacher")
    assert not teacher.exists()  # the table still holds the 20 problems data seed 0 does not give at 5/5/5
    _check_base_draw("arith", {**settings, "base_model": "embedded"}, {"teacher_model": str(teacher)})
    teacher.mkdir(parents=True)  # once built there, it is checked like the base
    with pytest.raises(SystemExit, match="distill/teacher was built beside 20 problems"):
        _check_base_draw("arith", {**settings, "base_model": "embedded"}, {"teacher_model": str(teacher)})


# ------------------------------------------------------------------------------------------- settings files
GOOD = {
    "name": "embedded_try",
    "label": "exploratory",
    "model": "embedded",
    "problem_set": "arith",
    "seeds": [100, 101, 102],
    "experiments": ["restem"],
    "iterations": 2,
    "set": {"base_model": "/m/base", "base_data_seed": 0, "trainer.learning_rate": 5e-5},
    "why": "chosen on validation",
}


def _write(tmp_path, file="s.yaml", **fields):
    import yaml

    raw = {**GOOD, **fields}
    path = tmp_path / file
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not ...}, sort_keys=False))
    return path


def test_a_good_settings_file_loads_as_the_run_it_describes(tmp_path):
    s = load_paper_settings(_write(tmp_path))
    assert (s.name, s.label, s.seeds, s.experiments, s.iterations) == ("embedded_try", "exploratory",
                                                                       [100, 101, 102], ["restem"], 2)  # fmt: skip
    assert s.set_items() == ['base_model="/m/base"', "base_data_seed=0", "trainer.learning_rate=5e-05"]


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"label": "maybe"}, "label: expected one of exploratory, confirmatory"),
        ({"why": ...}, "why: missing"),
        ({"why": "  "}, "why: expected a non-empty string"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"name": "seed_3"}, "name: 'seed_3' is not a folder name"),
        ({"seeds": [1, 1]}, "seeds: .* lists a seed twice"),
        ({"seeds": [1, "two"]}, r"seeds\[1\]: expected an integer"),
        ({"seeds": []}, "seeds: expected a non-empty list"),
        ({"experiments": ["restem", "nosuch"]}, r"experiments\[1\]: no experiment 'nosuch'"),
        ({"iterations": 0}, "iterations: expected an integer >= 1"),
        ({"set": {"nosuch": 1}}, "set.nosuch: no such field of ExperimentResource"),
        ({"set": {"trainer.learning_rate": "fast"}}, "set.trainer.learning_rate: Input should be a valid number"),
        ({"set": {"samples_per_problem": 0}}, "set.samples_per_problem: .*samples_per_problem must be >= 1"),
        ({"set": {"sampler.backend": "x"}}, "set.sampler.backend: expected FIELD, trainer.FIELD or distill.FIELD"),
        ({"set": {"data_seed": 4}}, "set.data_seed: set by the run, not here"),
        ({"set": {"test_ids_file": "x.txt"}}, "set.test_ids_file: set by the run, not here: name the held-out slice"),
        ({"label": "confirmatory", "seeds": [100, 101]}, "seeds: a confirmatory run needs at least 3 seeds"),
        ({"label": "confirmatory", "seeds": [0, 101, 102]}, "seeds: 0 is set.base_data_seed"),
        ({"label": "confirmatory", "problem_set": "gsm8k"}, "holdout: a confirmatory run on a real data set"),
        ({"problem_set": "gsm8k", "holdout": {"set": "gsm8k", "split": "test", "seed": 1, "size": 9, "file": "h"}},
         "holdout: a held-out slice is scored once, by a confirmatory run"),
        ({"label": "confirmatory", "problem_set": "gsm8k", "holdout": {"set": "math", "split": "test", "seed": 1,
          "size": 9, "file": "h"}}, "holdout.set: 'math' is not the run's problem_set 'gsm8k'"),
        ({"label": "confirmatory", "problem_set": "gsm8k", "holdout": {"set": "gsm8k", "split": "test", "seed": 1,
          "size": 9, "file": "h", "earlier": [{"kind": "guess", "size": 5}]}},
         r"holdout.earlier\[0\]: kind must be one of ingest, nodagster, first"),
    ],
)  # fmt: skip
def test_a_bad_field_is_named_with_its_file(tmp_path, fields, where):
    path = _write(tmp_path, **fields)
    with pytest.raises(SettingsError, match=f"^{path}: {where}"):
        load_paper_settings(path)


def test_an_unreadable_file_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SettingsError, match="bad.yaml: cannot read the settings"):
        load_paper_settings(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SettingsError, match="list.yaml: expected a mapping"):
        load_paper_settings(tmp_path / "list.yaml")


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def test_a_confirmatory_file_runs_only_committed_and_unmodified(tmp_path):
    repo = tmp_path / "repo"
    (repo / "experiments" / "paper").mkdir(parents=True)
    _git(repo, "init", "-q")
    base = tmp_path / "base"
    base.mkdir()
    path = _write(repo / "experiments" / "paper", "c.yaml", label="confirmatory", set={"base_model": str(base),
                  "base_data_seed": 0})  # fmt: skip
    settings = load_paper_settings(path)
    with pytest.raises(SettingsError, match="experiments/paper/c.yaml: not committed"):
        provenance_of(settings)
    _git(repo, "add", "experiments/paper/c.yaml")
    with pytest.raises(SettingsError, match=r"c.yaml: changed since its last commit \(git status: 'A  "):
        provenance_of(settings)  # staged is not committed
    _git(repo, "commit", "-qm", "settings")
    commit = _git(repo, "log", "-1", "--format=%H").strip()
    got = provenance_of(settings)
    assert got["label"] == "confirmatory" and got["settings_file"] == "experiments/paper/c.yaml"
    assert got["settings_commit"] == commit == got["code_commit"] and got["seeds"] == [100, 101, 102]
    path.write_text(path.read_text().replace("chosen on validation", "chosen on test, after all"))
    with pytest.raises(
        SettingsError, match=r"c.yaml: changed since its last commit \(git status: 'M experiments/paper/c.yaml'"
    ):
        provenance_of(load_paper_settings(path))
    _git(repo, "checkout", "-q", "--", "experiments/paper/c.yaml")
    base.rmdir()  # the reused base must be here
    with pytest.raises(SettingsError, match=r"c.yaml: set.base_model: no model folder at"):
        provenance_of(settings)
    outside = _write(tmp_path, "o.yaml", label="confirmatory")
    with pytest.raises(SettingsError, match="o.yaml: not in a git repository"):
        committed_version(outside)


def test_an_exploratory_file_is_recorded_without_a_commit_check(tmp_path):
    got = provenance_of(load_paper_settings(_write(tmp_path)))
    assert got["label"] == "exploratory" and got["settings_commit"] is None
    assert provenance_of(None)["label"] == "exploratory" and provenance_of(None)["settings_file"] is None


def test_the_shipped_settings_files_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "experiments" / "paper"
    loaded = {p.stem: load_paper_settings(p) for p in sorted(folder.glob("*.yaml"))}
    assert {"embedded_confirmatory", "smollm2_arith_confirmatory"} <= set(loaded)
    for name, s in loaded.items():
        assert s.name == name and s.label == "confirmatory" and len(s.seeds) >= 3
    assert loaded["embedded_confirmatory"].set["base_data_seed"] == 0


def test_settings_and_the_flags_it_holds_do_not_mix(tmp_path):
    from assets.cli import main

    path = _write(tmp_path)
    with pytest.raises(SystemExit, match="holds the run's settings: drop --seeds, --set"):
        main(["experiment", "paper", "--settings", str(path), "--seeds", "1", "--set", "eval_k=2"])
    with pytest.raises(SystemExit, match="--write-holdout: .* give --settings FILE"):
        main(["experiment", "paper", "--write-holdout"])


# ------------------------------------------------------------------------------------------- paper_run.json
def test_a_run_keeps_its_label_and_settings_across_sessions(tmp_path):
    from assets.paper_run import claim_paper_root

    root = tmp_path / "paper" / "c"
    confirm = {"label": "confirmatory", "settings_file": "experiments/paper/c.yaml", "settings_commit": "abc"}
    claim_paper_root(root, confirm, write=False)  # --report-only writes nothing
    assert not root.exists()
    claim_paper_root(root, confirm)
    claim_paper_root(root, confirm)  # the same run, resumed
    assert json.loads((root / "paper_run.json").read_text()) == confirm
    with pytest.raises(SystemExit, match="holds a run with label 'confirmatory'.*give it another name"):
        claim_paper_root(root, {**confirm, "settings_commit": "def"})  # the file changed: a new run
    with pytest.raises(SystemExit, match="holds a run with"):
        claim_paper_root(root, {"label": "exploratory"})
    old = tmp_path / "paper" / "explored"
    (old / "seed_0").mkdir(parents=True)
    with pytest.raises(SystemExit, match="holds earlier results: a confirmatory run starts in a folder of its own"):
        claim_paper_root(old, confirm)
    claim_paper_root(old, {"label": "exploratory"})  # an exploratory run started before the record


def test_the_report_is_labelled_with_its_settings_commit_and_draws(tmp_path):
    from assets.paper import PAPER_RUN, SEED_RECORD, write_paper_report

    run = tmp_path / "paper" / "c"
    for seed, base in ((100, 0.5), (101, 0.6), (102, 0.55)):
        rec = paper.seed_record(seed, 4, {"base": {"test/pass@1": base}, "sft": {"test/pass@1": base}}, {}, 400)
        rec |= {"data_seed": seed, "base_data_seed": 0, "test_ids_file": None}
        path = DataRoot(run / f"seed_{seed}").report_path("arith", SEED_RECORD, ".json")
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(rec))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (run / PAPER_RUN).write_text(json.dumps({"label": "confirmatory", "settings_file": "experiments/paper/c.yaml",
                                             "settings_commit": commit}))  # fmt: skip
    report, paths, _ = write_paper_report(run / "seed_102", "arith", "arith: t")
    assert report["label"] == "confirmatory"
    assert report["settings"] == {"file": "experiments/paper/c.yaml", "commit": commit}
    assert [d["data_seed"] for d in report["data"]] == [100, 101, 102]
    md = paths["md"].read_text()
    assert md.startswith("# arith: t (confirmatory)\n\n**Confirmatory** run: settings `experiments/paper/c.yaml` at "
                         "commit `0123456789ab`, committed before the run")  # fmt: skip
    assert "data seeds 100, 101, 102 (each seed its own draw" in md
    assert "every problem of data seed 0 and its base's pretraining pool skipped" in md
    assert json.loads(paths["json"].read_text())["label"] == "confirmatory"
    (run / PAPER_RUN).unlink()  # no record: a run without a settings file
    report, paths, _ = write_paper_report(run / "seed_102", "arith", "arith: t")
    assert report["label"] == "exploratory" and report["settings"] is None
    assert paths["md"].read_text().startswith("# arith: t (exploratory)\n\n**Exploratory** run: no settings file")


# ------------------------------------------------------------------------------------------- held-out slices
def _problems(n_test: int) -> list[Problem]:
    train = [Problem(f"s/train/{i}", "math", f"t{i}", "s", "train", answer="1") for i in range(3)]
    return train + [Problem(f"s/test/{i}", "math", f"q{i}", "s", "test", answer="1") for i in range(n_test)]


def test_earlier_subsets_are_the_recipes_ids():
    problems = _problems(30)
    ingest = Earlier("ingest", 8, seed=0).ids(problems, "test")
    assert ingest == {p.id for p in subset(problems, 0, 8, 0) if p.split == "test"}  # the pipeline's own subset
    assert Earlier("ingest", 30, seed=0).ids(problems, "test") == {f"s/test/{i}" for i in range(30)}  # cap >= n
    assert Earlier("first", 3).ids(problems, "test") == {"s/test/0", "s/test/1", "s/test/2"}  # file order
    import random

    pool = sorted((p for p in problems if p.split == "test"), key=lambda p: p.id)
    assert Earlier("nodagster", 5, seed=0).ids(problems, "test") == {
        p.id for p in random.Random("0/test").sample(pool, 5)
    }  # scripts/experiment_nodagster.py subsets(): Random(f"{seed}/{split}")
    with pytest.raises(ValueError, match="size must be >= 1"):
        Earlier("first", 0)


def test_a_holdout_leaves_out_every_earlier_id_and_replaces_the_test_split(tmp_path):
    problems = _problems(12)
    spec = HoldoutSpec("s", "test", 7, 4, (Earlier("first", 5), Earlier("ingest", 3, seed=1)))
    ids, taken = holdout_ids(problems, spec)
    assert len(ids) == 4 and not set(ids) & taken and len(taken) >= 5 and ids == sorted(ids)
    assert holdout_ids(problems, spec) == (ids, taken)  # deterministic
    with pytest.raises(ValueError, match=r"s test: \d problems no earlier subset took, fewer than size 9"):
        holdout_ids(problems, HoldoutSpec("s", "test", 7, 9, spec.earlier))
    path = tmp_path / "h.txt"
    path.write_text(holdout_text(spec, ids, taken, 12, "a test"))
    assert read_holdout(path) == ({"set": "s", "split": "test"}, ids)
    kept = apply_holdout(problems, path, "s")
    assert [p.id for p in kept if p.split == "test"] == sorted(ids, key=lambda i: int(i.rsplit("/", 1)[1]))
    assert sum(p.split == "train" for p in kept) == 3  # train untouched
    assert apply_holdout(problems, path, "other") == problems  # another set's slice: nothing changes
    with pytest.raises(ValueError, match=r"h.txt: id 's/test/\d+' is not a 'test' problem of 's'"):
        apply_holdout(_problems(2), path, "s")
    path.write_text("# set: s\ns/test/1\n")
    with pytest.raises(ValueError, match="h.txt: no '# split: ...' header line"):
        read_holdout(path)
    path.write_text("# set: s\n# split: test\ns/test/1\ns/test/1\n")
    with pytest.raises(ValueError, match="h.txt: line 4: 's/test/1' is not one problem id, or is there twice"):
        read_holdout(path)


def test_the_committed_gsm8k_slice_is_its_recipes_and_touches_no_earlier_subset(shared_data, monkeypatch):
    from pathlib import Path

    from assets.paper_settings import check_holdout

    monkeypatch.setenv("RESTEM_EXTERNAL_DATA", str(shared_data))
    folder = Path(__file__).resolve().parents[1] / "experiments" / "paper"
    settings = load_paper_settings(folder / "smollm2_gsm8k_confirmatory.yaml")
    check_holdout(settings)  # the file is what its recipe draws
    _, ids = read_holdout(settings.holdout_file)
    from restem_pipeline.data.problems import load_builtin

    problems = load_builtin("gsm8k").problems
    demo = {p.id for p in subset(problems, 64, 50, 0) if p.split == "test"}  # restem demo --model smollm2-135m
    assert len(ids) == 400 and not set(ids) & demo and not set(ids) & {f"gsm8k/test/{i}" for i in range(64)}
    experiment = ExperimentResource(test_ids_file=str(settings.holdout_file), max_eval_problems=200)
    from assets.ingest import ingested_problems

    got = ingested_problems("gsm8k", StorageResource(data_root="/nonexistent"), experiment)
    test = [p.id for p in got if p.split == "test"]
    assert len(test) == 200 and set(test) <= set(ids)  # a seed draws its 200 from the slice


@pytest.mark.parametrize("field", ["base_data_seed", "test_ids_file"])
def test_the_draws_settings_are_deployment_wide_not_per_experiment(tmp_path, field):
    """Every experiment reads the same problem set and base: an experiment file may not set them."""
    from assets.definitions import check_experiment_settings
    from restem_pipeline.experiments import ExperimentError

    with pytest.raises(ExperimentError, match=f"settings.experiment.{field}.*shared by every experiment"):
        check_experiment_settings(tmp_path / "e.yaml", {"experiment": {field: 0 if field == "base_data_seed" else "x"}})


def test_run_paper_gives_each_seed_its_own_draw_and_the_first_seeds_base(tmp_path, monkeypatch):
    """What ``run_paper`` hands each seed's Dagster runs (``run_demo`` stubbed): seed s draws with data seed s;
    seeds after the first take its base and teacher, and skip its data seed's problems and pool."""
    from assets import paper_run
    from assets.demo import chosen_experiments
    from assets.paper import SEED_RECORD

    calls = []

    def run_demo(problem_set, exps, root, settings, **kw):
        calls.append((settings, kw["distill"] or {}))
        DataRoot(root).model_dir(problem_set, "base").mkdir(parents=True, exist_ok=True)
        return {"wall_seconds": 1.0, "warnings": []}

    def materialize(assets, partition_key, resources, **kw):
        path = resources["storage"].root().report_path(partition_key, "paper", ".json")
        path.write_text(json.dumps({"seeds": [], "tags": kw["tags"]}))

    monkeypatch.setattr(paper_run, "run_demo", run_demo)
    monkeypatch.setattr(paper_run, "seed_record_from", lambda root, ps, exps, seed, data: {"seed": seed, **data})
    monkeypatch.setattr(paper_run, "ensure_instance", lambda: None)
    monkeypatch.setattr(paper_run.dg, "materialize", materialize)
    exps = chosen_experiments(["restem", "distill"])
    out = paper_run.run_paper("arith", exps, [0, 1, 2], tmp_path / "paper", {"arith_train": 5}, show_progress=False)
    drawn = [(s["seed"], s["data_seed"], s.get("base_data_seed")) for s, _ in calls]
    assert drawn == [(0, 0, None), (1, 1, 0), (2, 2, 0)]
    first = DataRoot(tmp_path / "paper" / "seed_0")
    assert "base_model" not in calls[0][0] and calls[0][1] == {}  # seed 0 builds the base and the teacher
    for settings, teacher in calls[1:]:
        assert settings["base_model"] == str(first.model_dir("arith", "base"))
        assert teacher["teacher_model"] == str(first.of("distill").model_dir("arith", "teacher"))
    records = [json.loads(DataRoot(tmp_path / "paper" / f"seed_{s}").report_path("arith", SEED_RECORD, ".json")
                          .read_text()) for s in (0, 1, 2)]  # fmt: skip
    assert [(r["data_seed"], r["base_data_seed"]) for r in records] == [(0, None), (1, 0), (2, 0)]
    assert json.loads((tmp_path / "paper" / "paper_run.json").read_text()) == {"label": "exploratory"}
    assert out["report"]["tags"]["restem/paper_records_written"] == "true"  # the asset leaves the records be
