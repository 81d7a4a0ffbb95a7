"""``restem demo`` settings: ``--set KEY=VALUE`` parsing and what ``--model``/``--quick`` choose (no model run)."""

import pytest

from assets.cli import apply_settings, build_parser, parse_settings
from assets.demo import demo_settings
from resources import ExperimentResource, TrainerResource


def test_set_parses_json_values_and_targets():
    got = parse_settings(["max_train_problems=200", "trainer.epochs=1.5", "prompt_style=chat", "few_shot=false"])
    assert got == [("max_train_problems", 200), ("trainer.epochs", 1.5), ("prompt_style", "chat"), ("few_shot", False)]
    for bad in ("max_train_problems", "=3", "storage.data_root=x"):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            parse_settings([bad])
    sampler = {"threads": 2}
    apply_settings(["sampler.threads=0", "sampler.memory_budget_mb=512"], {}, {}, {}, sampler)
    assert sampler == {"threads": 0, "memory_budget_mb": 512}
    with pytest.raises(SystemExit, match="restem demo only"):  # restem experiment paper has no sampler settings
        apply_settings(["sampler.threads=1"], {}, {}, {})
    args = build_parser().parse_args(["demo", "--set", "seed=3", "--set", "trainer.batch_size=8"])
    assert args.set == ["seed=3", "trainer.batch_size=8"]


def test_set_reaches_each_resource_and_distill_settings_are_validated():
    from resources import DistillResource

    overrides, trainer = {"seed": 1}, {}
    distill = apply_settings(
        ["seed=2", "trainer.learning_rate=5e-5", "distill.teacher_learning_rate=1e-3", "distill.teacher_layers=6"],
        overrides,
        trainer,
        {"teacher_hidden_size": 192},
    )
    assert overrides == {"seed": 2} and trainer == {"learning_rate": 5e-5}
    assert distill == {"teacher_hidden_size": 192, "teacher_learning_rate": 1e-3, "teacher_layers": 6}
    assert DistillResource(**distill).teacher_learning_rate == 1e-3
    with pytest.raises(ValueError, match="teacher_learning_rate must be in"):
        DistillResource(**apply_settings(["distill.teacher_learning_rate=3"], {}, {}, {}))


def test_real_model_settings_are_valid_resources():
    for quick in (False, True):
        s = demo_settings("smollm2-135m", quick)
        exp, trainer = ExperimentResource(**s["experiment"]), TrainerResource(**s["trainer"])
        assert exp.base_model == "smollm2-135m" and exp.few_shot  # 4-shot chat: chosen on validation
        assert s["problem_set"] == ("arith" if quick else "gsm8k")
        assert trainer.learning_rate == 5e-5
    quick = demo_settings("smollm2-135m", True)
    assert quick["iterations"] == 2 and quick["trainer"]["max_steps"] == 2
    assert demo_settings("embedded", False) == {"problem_set": "arith", "experiment": {}, "trainer": {}}


def test_the_demo_console_shows_info_not_debug(capfd):
    """What ``restem demo`` passes to each run: its console logger at INFO, so the stage's own lines show
    and Dagster's DEBUG events (step starts, outputs, type checks) do not; they stay in the instance."""
    import dagster as dg

    from assets.demo import console_run_config

    @dg.asset
    def talker(context: dg.AssetExecutionContext) -> None:
        context.log.info("sampling: 3/3 (100%)")
        context.log.debug("a debug line")

    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([talker], instance=instance, run_config=console_run_config(True)).success
    shown = capfd.readouterr().err
    assert "sampling: 3/3 (100%)" in shown
    assert " - DEBUG - " not in shown and "a debug line" not in shown
    stored = [r.dagster_event for r in instance.all_logs(instance.get_runs()[0].run_id) if r.is_dagster_event]
    assert any(e.event_type_value == "STEP_START" for e in stored)  # the events are all still stored
    assert dg.materialize([talker], run_config=console_run_config(False)).success
    assert "sampling: 3/3" not in capfd.readouterr().err  # no progress bar: only warnings


def test_a_model_given_by_path_gets_the_settings_of_the_same_model_named(tmp_path):
    from assets.cli import demo_model
    from assets.demo import demo_settings

    path = str(tmp_path / "my-model")
    assert demo_model("embedded", [f"base_model={path}"]) == path
    assert demo_model("embedded", ["base_model=embedded", "eval_k=2"]) == "embedded"
    assert demo_model("smollm2-135m", [f"base_model={path}"]) == "smollm2-135m"  # --model wins, --set then applies
    by_set, by_model = demo_settings(demo_model("embedded", [f"base_model={path}"]), True), demo_settings(path, True)
    assert by_set == by_model and by_set["experiment"]["base_model"] == path
    assert "max_length" not in by_set["trainer"]  # the trainer's default: the model's context


def test_comparison_markdown_by_hand():
    from assets.demo import comparison_markdown

    def m(test, val):
        return {"test/pass@1": test, "validation/pass@1": val, "test/scored_problems": 400}

    record = {
        "k": 8,
        "experiments": {"restem": 2},
        "stages": {
            "base": m(0.438, 0.485),
            "sft": m(0.442, 0.48),
            "restem/iter_1": m(0.475, 0.445),
            "restem/iter_2": m(0.472, 0.445),
        },  # fmt: skip
    }
    lines = comparison_markdown(record).splitlines()
    assert lines[0] == "| model | test pass@1 | test pass@8 | test maj@8 | val pass@1 | train pass@1 |"
    assert lines[2].startswith("| base | 43.8% |") and lines[4].startswith("| restem/iter_1 | 47.5% |")
    # a tie on validation goes to the earlier iteration; 0.475 - 0.438 = +3.7, 0.475 - 0.442 = +3.3, 100 / 400
    assert lines[-1] == (
        "Validation picks restem/iter_1 (validation pass@1 -4.0 points vs the base): test pass@1 +3.7 points "
        "over the base, +3.3 points over SFT (400 test problems: one is 0.25 points)."
    )
