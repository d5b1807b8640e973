"""The planner in sweepdeck's flow: the spec's GPU, the pre-flight check, recovery fixes, the review line."""

from __future__ import annotations

import pytest

from backends import diagnosis as dg
from backends.base import Check
from backends.planning import (
    CHECK_NAME,
    PLANNED_RULES,
    Unplanned,
    engine_flags,
    plan_for,
    planner_check,
    planner_fixes,
    request_for,
)
from backends.session import Session, apply_fix
from config.catalog import DATA_DIR, load_catalogs, load_yaml
from config.settings import Profile, Settings
from config.spec import Source, build_spec, with_profile_gpu


@pytest.fixture(scope="module")
def cats():
    return load_catalogs()


def on(cats, model: str, gpu: str | None, **kw):
    spec = build_spec(cats, model, **kw)
    return spec.set("engine.gpu", gpu) if gpu else spec


def test_engine_flags_both_forms():
    flags = engine_flags(("--gpu-memory-utilization=0.95", "--kv-cache-dtype", "fp8", "--enforce-eager", "-pp", "2"))
    assert flags == {"--gpu-memory-utilization": "0.95", "--kv-cache-dtype": "fp8", "--enforce-eager": "true",
                     "-pp": "2"}


def test_request_reads_the_spec_and_its_vllm_args(cats):
    spec = on(cats, "qwen-7b", "H100", extra_args="--gpu-memory-utilization=0.95 --kv-cache-dtype=fp8 --dtype=float16")
    r = request_for(spec)
    assert not isinstance(r, Unplanned)
    assert r.gpu.name == "H100-80GB" and r.gpu_memory_utilization == 0.95 and r.kv_cache_dtype == "fp8"
    assert r.dtype == "float16" and r.max_model_len == spec.engine.max_model_len == 8192
    assert r.max_num_seqs == 256 and r.max_num_batched_tokens == 4096  # the catalog's, as sweepdeck passes them


def test_nothing_to_plan_with_is_not_a_check(cats):
    assert isinstance(plan_for(build_spec(cats, "qwen-7b")), Unplanned)  # no GPU known
    assert planner_check(build_spec(cats, "qwen-7b")) is None
    assert "GPU" in plan_for(build_spec(cats, "qwen-7b")).fix


def test_check_pass_warn_fail(cats):
    ok = planner_check(on(cats, "qwen-1.5b", "H100", max_num_seqs=16))
    assert ok is not None and ok.status == "pass" and ok.name == CHECK_NAME
    assert ok.detail.startswith("fits: weights ") and ok.data["fits"] is True
    warn = planner_check(on(cats, "llama2-7b", "A40"))
    assert warn is not None and warn.status == "warn"
    assert "fewer than max_num_seqs=256 requests of 4096 tokens fit at once" in warn.detail
    fail = planner_check(on(cats, "llama3-70b", "A40", tp=1))
    assert fail is not None and fail.status == "fail"
    assert fail.detail.startswith("does not fit: weights ") and "Nearest that fit: TP=1 -> TP=4" in fail.fix


def test_profile_gpu_and_values_yaml(cats):
    spec = build_spec(cats, "qwen-7b", backend="slurm")
    assert with_profile_gpu(spec, {"gpus": "A40:1"}).engine.gpu == "A40"
    assert with_profile_gpu(spec, {"gpus": "A40:1"}).source("engine.gpu") == Source.PROFILE
    assert with_profile_gpu(spec, {"gpus": "T9000:1"}).engine.gpu is None  # not in the catalog: left out
    tekton = build_spec(cats, "qwen-7b", backend="tekton", base_values=load_yaml(DATA_DIR / "values.yaml"))
    assert tekton.engine.gpu == "H100-80GB" and tekton.source("engine.gpu") == Source.VALUES
    assert with_profile_gpu(tekton, {"gpu_product": "NVIDIA-A100-SXM4-80GB"}).engine.gpu == "H100-80GB"
    assert with_profile_gpu(tekton, {"gpu": "H200"}).engine.gpu == "H200"  # an explicit gpu key wins
    mine = tekton.set("engine.gpu", "A40")
    assert with_profile_gpu(mine, {"gpu": "H200"}).engine.gpu == "A40"  # the user's choice wins


def test_settings_give_the_gpu_and_slurm_gpu_count(cats):
    settings = Settings(profiles={"alvis": Profile("alvis", "slurm", {"backend": "slurm", "gpus": "A40:1"})})
    spec = build_spec(cats, "llama2-7b", backend="slurm", profile="alvis", tp=2)
    result = plan_for(spec, settings)
    assert not isinstance(result, Unplanned)
    assert result.request.gpu.name == "A40" and result.request.gpus_available == 1
    assert result.problems[0].code == "gpus"  # TP 2 on a one-GPU job


def test_planner_fixes_replace_blind_halving(cats):
    spec = on(cats, "llama3-70b", "A100-80GB", tp=2, max_model_len=32768)  # one request's KV cache does not fit
    fixes = dg.fixes_for(dg.CUDA_OOM, spec)
    assert fixes and all(f.label.startswith("Planner: ") for f in fixes)
    assert fixes[0].changes == {"engine.tp": 4}
    for fix in fixes:
        fixed = apply_fix(spec, fix)
        result = plan_for(fixed)
        assert not isinstance(result, Unplanned) and result.fits, fix
        assert fixed.source(next(iter(fix.changes))) == Source.FIX
    args = {f.label: f.changes["engine.extra_args"] for f in fixes if "engine.extra_args" in f.changes}
    assert args["Planner: fp8 KV cache"] == ("--kv-cache-dtype=fp8",)
    # without a GPU the planner has nothing to say: the rule's own fixes stay
    blind = dg.fixes_for(dg.CUDA_OOM, build_spec(cats, "llama3-70b", tp=2, max_model_len=32768))
    assert blind[0].label == "Increase TP" and blind[0].changes == {"engine.tp": 4}
    assert planner_fixes(dg.IMAGE_PULL, spec) is None


def test_vllm_019_kv_cache_wording_is_diagnosed():
    line = ("ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is "
            "needed, which is larger than the available KV cache memory (6.41 GiB). Based on the available memory, the "
            "estimated maximum model length is 52528.")
    found = dg.diagnose_line(line)
    assert found is not None and found.rule_id == dg.KV_CACHE_TOO_SMALL
    assert found.rule_id in PLANNED_RULES  # its fixes come from the planner


class FakeBackend:
    def __init__(self, settings=None):
        self.settings = settings

    async def preflight(self, spec):
        return [Check("Port free", "pass")]


async def test_session_preflight_appends_the_memory_plan(cats, tmp_path):
    from backends.store import RunStore

    spec = on(cats, "llama3-70b", "A40", tp=1)
    checks = await Session(FakeBackend(), spec, store=RunStore(tmp_path)).preflight()
    assert [c.name for c in checks] == ["Port free", CHECK_NAME, "Run store writable"] and checks[1].status == "fail"
    quiet = await Session(FakeBackend(), build_spec(cats, "llama3-70b"), store=RunStore(tmp_path)).preflight()
    assert [c.name for c in quiet] == ["Port free", "Run store writable"]  # no GPU known: no memory plan


def test_wizard_state_plan_line(cats):
    from tui.screens.wizard.state import WizardState

    settings = Settings(profiles={"alvis": Profile("alvis", "slurm", {"backend": "slurm", "gpus": "A40:4"})})
    state = WizardState(cats, settings=settings)
    state.choose_model("llama3-70b")  # the catalog recommends TP 4
    state.choose_backend("slurm", "alvis")
    assert state.spec is not None and state.spec.engine.gpu == "A40"
    assert any(r.key == "res:GPU" and r.value == "A40" and r.source == "profile" for r in state.review_rows())
    assert state.plan_line()[1] is True
    state.edit("engine.max_model_len", 65536)
    text, fits, fixes = state.plan_line()
    assert fits is False and text.startswith("does not fit: one request of 65536 tokens needs") and fixes
    for path, value in fixes[0].changes.items():
        state.edit(path, value)
    assert state.plan_line()[1] is True
    state.edit("engine.tp", 8)
    text, fits, _ = state.plan_line()
    assert fits is False and "8 GPUs, but the request has 4" in text
    state.edit("engine.gpu", "H200")
    state.choose_backend("local", None)
    text, fits, _ = state.plan_line()
    assert fits is True and text.startswith("fits: weights ")  # the user's GPU carries over; no GPU count locally


def test_spec_gpu_field_round_trips_and_is_validated(cats):
    from config.errors import SweepdeckError
    from config.spec import ExperimentSpec

    spec = build_spec(cats, "qwen-7b").set("engine.gpu", "nvidia-a100-sxm4-80gb")
    assert spec.engine.gpu == "A100-80GB" and spec.source("engine.gpu") == Source.USER
    assert ExperimentSpec.from_dict(spec.to_dict()).engine.gpu == "A100-80GB"
    old = spec.to_dict()
    del old["engine"]["gpu"]  # a run saved before the field existed
    assert ExperimentSpec.from_dict(old).engine.gpu is None
    assert "--gpu" not in " ".join(spec.serve_command())  # not a vLLM flag
    with pytest.raises(SweepdeckError, match="Unknown GPU 'Z80'"):
        spec.set("engine.gpu", "Z80")
