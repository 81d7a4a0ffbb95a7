"""The paper report: verdicts, mean ± sd, findings from hand-made seed records; the held-out set; the job."""

import statistics

import pytest

from assets.paper_run import upsert_section
from resources import ExperimentResource
from restem_pipeline.data import arith
from restem_pipeline.data.problems import load_builtin
from restem_pipeline.evaluation import paper


@pytest.mark.parametrize(
    ("p", "df", "table"),
    # Student's t, two-sided 95% (p = 0.975) and 90% (p = 0.95), from a printed t table
    [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776), (0.975, 9, 2.262),
     (0.975, 30, 2.042), (0.95, 1, 6.314), (0.95, 2, 2.920), (0.95, 10, 1.812)],
)  # fmt: skip
def test_t_quantile_matches_the_t_table(p, df, table):
    assert paper.t_quantile(p, df) == pytest.approx(table, abs=5e-4)


def test_t_quantile_refuses_what_it_cannot_answer():
    with pytest.raises(ValueError, match="df >= 1"):
        paper.t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="0.5 < p < 1"):
        paper.t_quantile(0.4, 3)


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        # n = 3, t(0.975, 2) = 4.303. m .03, sd .01, se .00577: half-width .0248, [.0052, .0548] > 0
        ([0.02, 0.03, 0.04], "reproduced"),
        # n = 3: m .03, sd .02, se .01155, half-width .0497: [-.0197, .0797]. (The old z-rule m - 2 se = .0069
        # > 0 called this reproduced.)
        ([0.01, 0.03, 0.05], "inconclusive"),
        ([-0.01, 0.02, 0.05], "inconclusive"),  # m .02, se .0173, half-width .0745
        ([-0.03, -0.02, -0.04], "not reproduced"),  # [-.0548, -.0052] <= 0
        # n = 2, t(0.975, 1) = 12.706. m .11, sd .01414, se .01: half-width .127, [-.017, .237]. (z-rule: .09 > 0)
        ([0.10, 0.12], "inconclusive"),
        ([0.100, 0.101], "reproduced"),  # m .1005, se .0005, half-width .00635: [.0941, .1069]
        ([0.0, 0.0], "not reproduced"),  # exactly no gain, no noise: the claimed gain is not there
        ([0.05], "inconclusive"),  # one seed says nothing about seed noise
        # n = 4, t(0.975, 3) = 3.182. m .025, sd .01291, se .006455: half-width .02054, [.0045, .0455]
        ([0.01, 0.02, 0.03, 0.04], "reproduced"),
    ],
)
def test_verdict_rule(diffs, expected):
    assert paper.verdict(diffs) == expected


def test_interval_by_hand():
    low, high = paper.interval([0.02, 0.03, 0.04])  # .03 -+ 4.303 * .01 / sqrt(3)
    assert (low, high) == pytest.approx((0.03 - 0.024843, 0.03 + 0.024843), abs=1e-5)
    assert paper.interval([0.5]) is None


def _report(test, val, train, k=4, levels=None, test_k=None, maj=None):
    levels = levels or {}
    summary = [{"split": "test", "level": lv, "pass@1_greedy": v} for lv, v in levels.items()]
    summary.append({"split": "test", "level": "all", "pass@1_greedy": test})
    metrics = {"test/pass@1": test, "validation/pass@1": val, "train/pass@1": train}
    if test_k is not None:
        metrics[f"test/pass@{k}_sampled"] = test_k
    if maj is not None:
        metrics[f"test/maj@{k}"] = maj
    return {"metrics": metrics, "eval_config": {"k": k}, "summary": summary}


def test_model_metrics_reads_the_report_and_drops_missing_values():
    report = _report(0.5, 0.4, 0.6, k=8, levels={"1": 0.9, "2": 0.1}, test_k=0.7, maj=float("nan"))
    got = paper.model_metrics(report, transfer={"metrics": {"test/pass@1": 0.25}})
    assert got == {
        "test/pass@1": 0.5,
        "test/pass@K": 0.7,
        "validation/pass@1": 0.4,
        "train/pass@1": 0.6,
        "test/L1": 0.9,
        "test/L2": 0.1,
        "transfer/test/pass@1": 0.25,
    }  # maj@8 is NaN: left out, not scored as 0


def test_seed_record_picks_the_iteration_validation_prefers_earliest_on_ties():
    models = {
        "base": {"test/pass@1": 0.1, "validation/pass@1": 0.1},
        "restem/iter_1": {"test/pass@1": 0.2, "validation/pass@1": 0.3},
        "restem/iter_2": {"test/pass@1": 0.9, "validation/pass@1": 0.3},  # test better, but a tie on validation
        "restem/iter_3": {"test/pass@1": 0.5, "validation/pass@1": 0.25},
    }
    rec = paper.seed_record(0, 4, models, {"restem": {"iterations": 3}})
    assert rec["models"][paper.BEST]["test/pass@1"] == 0.2
    assert rec["models"][paper.BEST]["iteration"] == 1.0


def _record(seed, base, sft, iters, three_x, rest_iters, distill, frac12, transfer_restem, transfer_rest):
    """Test pass@1 values; validation = test (so validation picks the best test iteration); train rises."""

    def m(test, train=None, transfer=None, lv=None):
        out = {"test/pass@1": test, "validation/pass@1": test, "train/pass@1": train if train is not None else test}
        out |= {"test/pass@K": test + 0.1, "test/maj@K": test + 0.05}
        if transfer is not None:
            out["transfer/test/pass@1"] = transfer
        if lv:
            out |= {f"test/L{i + 1}": v for i, v in enumerate(lv)}
        return out

    models = {
        "base": m(base, lv=[0.8, 0.6, 0.4, 0.2, 0.0]),
        "sft": m(sft),
        "restem_3x/iter_1": m(three_x),
        "distill/iter_1": m(distill),
        "restem_frac12/iter_1": m(frac12),
    }
    for t, v in enumerate(iters, start=1):
        lv = [0.8, 0.6 + 0.01 * t, 0.4 + 0.1 * t, 0.2 + 0.1 * t, 0.1 * t]
        models[f"restem/iter_{t}"] = m(v, train=v + 0.1 * t, transfer=transfer_restem[t - 1], lv=lv)
    for t, v in enumerate(rest_iters, start=1):
        models[f"rest/iter_{t}"] = m(v, transfer=transfer_rest[t - 1])
    exps = {"restem": {"iterations": len(iters)}, "rest": {"iterations": len(rest_iters)}}
    return paper.seed_record(seed, 4, models, exps)


def test_paper_report_table_and_findings_from_hand_made_records():
    r0 = _record(
        0, 0.50, 0.52, [0.55, 0.58, 0.57], 0.54, [0.55, 0.53, 0.50], 0.56, 0.53, [0.4, 0.42, 0.41], [0.4, 0.38, 0.35]
    )
    r1 = _record(
        1, 0.50, 0.50, [0.56, 0.59, 0.58], 0.56, [0.56, 0.52, 0.49], 0.49, 0.52, [0.4, 0.43, 0.44], [0.4, 0.37, 0.36]
    )
    report = paper.paper_report([r1, r0])  # any order: sorted by seed
    assert report["seeds"] == [0, 1]
    rows = {row["model"]: row for row in report["table"]}
    assert list(rows)[:2] == ["base", "sft"]
    sft = rows["sft"]["test/pass@1"]
    assert sft["mean"] == pytest.approx(0.51) and sft["sd"] == pytest.approx(statistics.stdev([0.52, 0.50]))
    # validation picks iteration 2 in both seeds (0.58, 0.59)
    assert rows[paper.BEST]["test/pass@1"]["values"] == pytest.approx([0.58, 0.59])
    f = {x["key"]: x for x in report["findings"]}
    assert f["restem_vs_base"]["diffs"] == pytest.approx([0.08, 0.09])
    assert f["restem_vs_base"]["verdict"] == "reproduced"  # m .085, se .005, half-width 12.706 * .005 = .0635
    assert f["restem_vs_sft"]["diffs"] == pytest.approx([0.06, 0.09])
    assert f["iterations_vs_3x"]["diffs"] == pytest.approx([0.57 - 0.54, 0.58 - 0.56])  # last iteration vs 3x
    # train rises by 0.1 per iteration on top of test: (train gain) - (test gain) = 0.2 in both seeds
    assert f["overfit"]["diffs"] == pytest.approx([0.2, 0.2])
    assert f["reset_transfers"]["diffs"] == pytest.approx([0.41 - 0.35, 0.44 - 0.36])
    assert f["distill_vs_human"]["diffs"] == pytest.approx([0.04, -0.01])
    assert f["distill_vs_human"]["verdict"] == "inconclusive"
    assert f["small_data"]["diffs"] == pytest.approx([0.03, 0.02])
    # best = iteration 2: gains per level (0, .02, .2, .2, .2): harder 3 mean .2 - easier 2 mean .01
    assert f["hard_levels"]["diffs"] == pytest.approx([0.19, 0.19])
    assert f["pass_at_k"]["diffs"] == pytest.approx([0.08, 0.09])
    assert sum(report["counts"].values()) == len(paper.FINDINGS)
    md = paper.report_markdown(report, "t")
    assert "| sft | 2 | 51.0 ± 1.4 |" in md
    assert "| +8.5 | [+2.1, +14.9] |" in md  # restem_vs_base, in points: .085 -+ .0635
    assert "t(0.975, 1) = 12.71" in md
    fig = paper.paper_figure(report)
    assert len(fig.axes) == 4


def test_a_finding_whose_experiment_did_not_run_says_so():
    rec = paper.seed_record(0, 4, {"base": {"test/pass@1": 0.5}, "sft": {"test/pass@1": 0.6}}, {})
    report = paper.paper_report([rec])
    f = {x["key"]: x for x in report["findings"]}
    assert f["distill_vs_human"]["verdict"].startswith("not run")
    assert f["restem_vs_sft"]["verdict"].startswith("not run")
    with pytest.raises(ValueError, match="no seed records"):
        paper.paper_report([])


def test_data_seed_fixes_problems_and_base_while_seed_varies_the_method():
    r = ExperimentResource(seed=2, data_seed=0)
    assert r.problems_seed == 0
    assert r.base_model_config().seed == 0 and r.base_model_config().pretrain.seed == 0
    assert r.e_step_params(1).seed == 2001  # the method's randomness follows seed
    assert ExperimentResource(seed=3).problems_seed == 3


def test_held_out_set_shares_no_name_item_or_problem_with_arith():
    ood = load_builtin("arith_ood").problems
    train = load_builtin("arith").problems
    assert {p.split for p in ood} == {"train", "validation", "test"}
    assert sum(p.split == "test" for p in ood) == 200 and sum(p.split == "validation" for p in ood) == 50
    names = {n for n, _, _ in arith.NAMES} | set(arith.ITEMS)
    for p in ood:
        words = {w.strip(".?").removesuffix("s") for w in p.prompt.split()}
        assert not words & names, p.prompt
    assert not {p.prompt for p in ood} & {p.prompt for p in train}
    assert [p.prompt for p in ood] == [p.prompt for p in load_builtin("arith_ood").problems]  # deterministic
    for p in ood[:50]:  # the reference solution computes the gold answer
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}") or f"\\boxed{{{p.answer}}}" in p.solution


def test_upsert_section_replaces_and_appends(tmp_path):
    path = tmp_path / "R.md"
    path.write_text("# results\n\nkeep me\n")
    upsert_section(path, "paper:x", "one")
    upsert_section(path, "paper:y", "two")
    upsert_section(path, "paper:x", "three")
    text = path.read_text()
    assert text.startswith("# results\n\nkeep me\n")
    assert "one" not in text and text.count("<!-- paper:x -->") == 1
    assert text.index("three") < text.index("two")  # replaced in place


def test_definitions_have_the_paper_job_over_every_comparison_experiment():
    import dagster as dg

    from assets.definitions import build_definitions
    from assets.paper import REPORT_KEY

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(REPORT_KEY).parent_keys}
    assert parents == {f"{e}/summary" for e in paper.PAPER_EXPERIMENTS}
    job = defs.resolve_job_def("paper")
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    must = {
        "problem_set", "base_model", "baselines/sft_eval_report", "paper/report", "distill/teacher_model",
        "restem/iter_3/transfer_arith_ood", "rest/iter_0/transfer_arith_ood", "restem_frac12/iter_1/checkpoint",
    }  # fmt: skip
    assert must <= selected, must - selected
    # a seed is launched from the UI by setting the seed and the seed's data root in the run config
    run_config = {
        "resources": {
            "experiment": {"config": {"seed": 1, "data_seed": 0}},
            "storage": {"config": {"data_root": "/data/paper/seed_1"}},
        }
    }
    assert dg.validate_run_config(job, run_config)["resources"]["experiment"]["config"]["seed"] == 1
    assert graph.get(REPORT_KEY).partitions_def == graph.get(dg.AssetKey("problem_set")).partitions_def


@pytest.mark.slow
def test_quick_paper_run_two_seeds_one_base_then_reused(tmp_path):
    """``restem experiment paper --quick``: two seeds through Dagster, one shared base, each seed its own problems
    (around the base's pool and seed 0's splits), every finding judged, the report labelled exploratory."""
    import json
    import os
    import subprocess
    import sys

    from assets.paper_run import paper_settings
    from restem_pipeline.storage.tables import DataRoot

    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    cmd = [sys.executable, "-m", "assets.cli", "experiment", "paper", "--quick", "--data-root", str(tmp_path)]
    cmd += ["--json", str(tmp_path / "out.json"), "--results", str(results)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3000)
    assert first.returncode == 0, first.stderr[-3000:]
    last = json.loads(first.stdout.strip().splitlines()[-1])
    assert last["seeds"] == [0, 1] and last["reused_seeds"] == []
    verdicts = set(last["findings"].values())
    assert verdicts <= {"reproduced", "not reproduced", "inconclusive"}, last["findings"]  # none "not run"
    assert set(last["findings"]) == {f.key for f in paper.FINDINGS}

    roots = [DataRoot(tmp_path / "paper" / "embedded_quick" / f"seed_{s}") for s in (0, 1)]
    # one pretrained base: seed 1 takes seed 0's (nothing built under seed 1) ...
    assert (roots[0].model_dir("arith", "base") / "config.json").exists()
    assert not roots[1].model_dir("arith", "base").exists()
    # ... while each seed draws its own problems: seed 1's, none of seed 0's nor of the base's pretraining pool
    prompts = [set(r.read_table("problems", "arith", "ingest")["prompt"]) for r in roots]
    quick = ExperimentResource(**paper_settings("embedded", True)["experiment"])
    pool = arith.pretraining_pool(0, quick.base_model_config().pool_per_level, prompts[0])
    assert len(prompts[1]) == len(prompts[0]) == 64 + 20 + 30 and not prompts[1] & prompts[0]
    assert not prompts[1] & {text for text, _ in pool}
    # ... and the method's randomness differs: the E-step samples of seed 0 and seed 1
    samples = [
        r.of("restem").read_table("raw_samples", "arith", "iter_1").sort("problem_id", "sample_index") for r in roots
    ]
    assert not samples[0]["completion"].equals(samples[1]["completion"])
    records = [json.loads(r.report_path("arith", "paper_seed", ".json").read_text()) for r in roots]
    assert [(rec["data_seed"], rec["base_data_seed"]) for rec in records] == [(0, None), (1, 0)]
    base = [rec["models"]["base"] for rec in records]
    assert "transfer/test/pass@1" in base[0] and "transfer/test/pass@1" in records[0]["models"]["rest/iter_2"]
    assert last["label"] == "exploratory" and last["settings"] is None

    out = json.loads((tmp_path / "out.json").read_text())
    rows = {row["model"]: row for row in out["report"]["table"]}
    sft = [rec["models"]["sft"]["test/pass@1"] for rec in records]
    assert rows["sft"]["test/pass@1"]["mean"] == pytest.approx(statistics.fmean(sft))
    assert rows["sft"]["test/pass@1"]["sd"] == pytest.approx(statistics.stdev(sft))
    section = results.read_text()
    assert "<!-- paper:embedded_quick:arith -->" in section and "| finding (paper) |" in section
    assert "### arith: the paper's findings, embedded_quick (exploratory)" in section

    # the Dagster instance holds the report's materialization (the UI shows it)
    import dagster as dg

    from assets.paper import REPORT_KEY

    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        event = inst.get_latest_materialization_event(REPORT_KEY)
    assert event is not None and "count/reproduced" in event.asset_materialization.metadata

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["reused_seeds"] == [0, 1]
    assert json.loads((tmp_path / "out.json").read_text())["report"] == out["report"]


def test_a_transfer_set_needs_no_partition_of_its_own(tmp_path):
    """Not ingested: the held-out set is resolved in memory (nothing written); an unknown set fails by name."""
    import dagster as dg

    from assets.ingest import ingested_problems
    from resources import StorageResource

    storage = StorageResource(data_root=str(tmp_path))
    got = ingested_problems("arith_ood", storage, ExperimentResource(max_eval_problems=30))
    assert sum(p.split == "test" for p in got) == 30 and all(p.source == "arith_ood" for p in got)
    assert not any(tmp_path.iterdir())  # resolved, not stored
    with pytest.raises(dg.Failure, match="nosuchset"):
        ingested_problems("nosuchset", storage, ExperimentResource())


def test_report_only_runs_nothing_and_says_when_no_seed_is_complete(tmp_path):
    from assets.demo import chosen_experiments
    from assets.paper_run import run_paper

    exps = chosen_experiments(["restem"])
    with pytest.raises(SystemExit, match="no seed of \\[0, 1\\] has every report stored"):
        run_paper("arith", exps, [0, 1], tmp_path / "paper", {}, run_missing=False)
    assert not (tmp_path / "paper").exists() or not any((tmp_path / "paper").rglob("*.parquet"))


@pytest.mark.parametrize("name", ["seed_3", "../escape", "a b"])
def test_a_variant_name_must_be_a_plain_folder_name(tmp_path, name):
    """``--name`` becomes a folder under paper/ and a results marker: anything else is refused before running."""
    from assets.cli import main

    with pytest.raises(SystemExit, match="--name"):
        main(["experiment", "paper", "--name", name, "--data-root", str(tmp_path), "--report-only"])
    assert not (tmp_path / "paper").exists()


def test_a_later_seed_refuses_clearly_when_the_first_seeds_base_was_a_given_model(tmp_path):
    """Seed 0 run with --set base_model=PATH has no base of its own; a later call without that flag must
    say so and name the model seed 0 used, not fail inside transformers on a missing folder."""
    from assets.paper_run import _first_base_exists
    from restem_pipeline.storage.tables import DataRoot

    first = DataRoot(tmp_path / "seed_0")
    report = first.report_path("arith", "base", ".json")
    report.parent.mkdir(parents=True)
    report.write_text('{"model": "data/paper/other/seed_0/models/arith/shared/base", "stage": "base"}')
    missing = str(first.model_dir("arith", "base"))
    with pytest.raises(SystemExit, match=r"names 'data/paper/other/seed_0/models/arith/shared/base'.*--set base_model"):
        _first_base_exists(first, "arith", 0, {"base_model": missing})
    # a given model (not under the first seed's root) and a base that is there pass
    _first_base_exists(first, "arith", 0, {"base_model": str(tmp_path / "elsewhere")})
    first.model_dir("arith", "base").mkdir(parents=True)
    _first_base_exists(first, "arith", 0, {"base_model": missing})


def test_the_report_says_what_one_test_problem_is_worth():
    recs = [
        paper.seed_record(s, 4, {"base": {"test/pass@1": b}, "sft": {"test/pass@1": b}}, {}, test_problems=400)
        for s, b in ((0, 0.5), (1, 0.6), (2, 0.55))
    ]
    report = paper.paper_report(recs)
    assert report["test_problems"] == [400]
    md = paper.report_markdown(report, "t")
    assert "one test problem is 0.25 points (400 test problems a seed)" in md  # 100 / 400
    assert "t(0.975, 2) = 4.30" in md


def test_studies_reread_verdicts_redoes_a_section_from_its_per_seed_differences(tmp_path):
    """``studies/reread_verdicts.py`` on a hand-made section: +2.8, +3.7, +4.0 -> mean 3.5, sd 0.6245, se 0.3606,
    t(0.975, 2 df) = 4.303 (t table): [1.95, 5.05], reproduced; +3.0, -1.0 (n = 2, t = 12.706): [-24.4, +26.4]."""
    import json
    import subprocess
    import sys

    results = tmp_path / "RESULTS.md"
    results.write_text(
        "<!-- paper:hand:arith -->\n| finding | measured | m | per seed | verdict |\n|---|---|---:|---|---|\n"
        "| gain A | a - b | +3.5 ± 0.4 | +2.8, +3.7, +4.0 | **reproduced** |\n"
        "| gain B | a - b | +1.0 ± 2.0 | +3.0, -1.0 | **inconclusive** |\n"
        "| not run | a - b | | | not run (x) |\n<!-- /paper:hand:arith -->\n"
    )
    out = subprocess.run(
        [sys.executable, "studies/reread_verdicts.py", str(results)], capture_output=True, text=True, check=True
    )
    rows = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    assert [r["now"] for r in rows] == ["reproduced", "inconclusive"]
    assert rows[0]["interval"] == pytest.approx([1.95, 5.05], abs=0.01)
    assert rows[1]["interval"] == pytest.approx([-24.41, 26.41], abs=0.01)
