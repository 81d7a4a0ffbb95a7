"""``restem demo`` settings: ``--set KEY=VALUE`` parsing and what ``--model``/``--quick`` choose (no model run)."""

import pytest

from assets.cli import build_parser, parse_settings
from assets.demo import demo_settings
from resources import ExperimentResource, TrainerResource


def test_set_parses_json_values_and_targets():
    got = parse_settings(["max_train_problems=200", "trainer.epochs=1.5", "prompt_style=chat", "few_shot=false"])
    assert got == [("max_train_problems", 200), ("trainer.epochs", 1.5), ("prompt_style", "chat"), ("few_shot", False)]
    for bad in ("max_train_problems", "=3", "sampler.batch_size=4"):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            parse_settings([bad])
    args = build_parser().parse_args(["demo", "--set", "seed=3", "--set", "trainer.batch_size=8"])
    assert args.set == ["seed=3", "trainer.batch_size=8"]


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
