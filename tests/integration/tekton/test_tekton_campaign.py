"""The BLIS campaign's inference-perf format end to end on the fake API (fake-API tests).

The campaign's own files (values.yaml, pipelinerun.yaml of experiment 14, Qwen3-14B on H100) are
read where the reference set keeps them and must stay untouched: pre-flight, launch, watch,
results (inference-perf's real lifecycle reports, summarised), and the headless command.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from backends.events import Finished, Phase, Progress
from backends.store import RunStore
from tests.integration.tekton.conftest import seed
from tests.support.fakekube.tekton_controller import INFERENCE_PERF_REPORTS, TektonController

pytestmark = [
    pytest.mark.fakeapi,
    pytest.mark.skipif(not INFERENCE_PERF_REPORTS.is_dir(),
                       reason=f"the reference files are not at {INFERENCE_PERF_REPORTS}"),
]

CAMPAIGN = Path("/work/shared/reference/tektonc-data-collection/blis-campaign-14-qwen3-14b-h100-codegen")
NS = "diya"
MODEL = "Qwen/Qwen3-14B"
# A catalog of the test's own with the campaign's model (the built-in one gets it separately).
CATALOG = {
    "aliases": {"qwen3-14b": MODEL},
    "recommended_settings": {MODEL: {"tp": [1, 2], "max_model_len": 8192, "max_context": 40960, "max_num_seqs": 128,
                                     "max_num_batched_tokens": 2048, "model_size_gb": 30}},
    "default_vllm_image": "vllm/vllm-openai:v0.15.1",
}


def _snapshot() -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in CAMPAIGN.iterdir()}


@pytest.fixture
def campaign(fake_kube, tmp_path):
    seed(fake_kube, ns=NS)
    results = tmp_path / "data-pvc"
    results.mkdir()
    ctl = TektonController(fake_kube, step=0.05, results_root=results).start()
    fake_kube.controller = ctl
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "known-models.yaml").write_text(yaml.safe_dump(CATALOG))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"catalog_dir": str(catalog), "profiles": {"camp": {
        "backend": "tekton", "namespace": NS, "kubeconfig": str(fake_kube.kubeconfig),
        "values": str(CAMPAIGN / "values.yaml"), "pipelinerun": str(CAMPAIGN / "pipelinerun.yaml"),
        "expected_minutes": {"download-model": 30},
    }}}))
    before = _snapshot()
    yield fake_kube, cfg
    ctl.stop()
    assert not [e for e in ctl.errors if not e.startswith("404")], ctl.errors
    assert _snapshot() == before  # the campaign's files were only read


def _backend_and_spec(cfg: Path, **changes):
    from backends.cleanup import CleanupRegistry
    from backends.tekton import TektonBackend
    from backends.tekton.build import Sources
    from backends.tekton.render import merge_pipelinerun
    from config.settings import load_settings
    from config.spec import build_spec

    settings = load_settings(cfg)
    profile = settings.profile("camp", "tekton")
    sources = Sources.from_profile(profile)
    base = merge_pipelinerun(sources.base_values(), sources.base_pipelinerun())
    spec = build_spec(settings.catalogs, "qwen3-14b", backend="tekton", profile="camp", namespace=NS,
                      experiment_id="exp14", base_values=base)
    for path, value in changes.items():
        spec = spec.set(path.replace("__", "."), value)
    return TektonBackend(settings, profile, registry=CleanupRegistry()), spec


async def _collect(backend, run, timeout=60):
    events = []

    async def go():
        async for ev in backend.events(run):
            events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events


async def test_campaign_values_preflight_passes_and_shows_the_inference_perf_workload(campaign):
    _fake, cfg = campaign
    backend, spec = _backend_and_spec(cfg)
    assert spec.profile_template is not None and spec.workload.app == "inference-perf"
    assert spec.engine.max_model_len == 4096 and spec.tp_sweep == (1,)  # the values' settings, not the catalog's
    checks = await backend.preflight(spec)
    by = {c.name: c for c in checks}
    assert [c.name for c in checks if c.status == "fail"] == []
    assert by["Values"].status == "pass"
    work = by["Workload"]
    assert work.status == "pass" and "constant: 5/s for 600 s → 10/s for 600 s (1200 s)" in work.detail
    assert "shared_prefix (num_unique_system_prompts=11" in work.detail and "uploaded to s3" in work.detail
    assert not any("stack.workload" in (c.detail + c.fix) for c in checks)  # the guidellm form is never asked for


async def test_campaign_launch_watch_and_inference_perf_results(campaign):
    fake, cfg = campaign
    backend, spec = _backend_and_spec(cfg, profile_template__load__stages="8x300, 16x300",
                                      profile_template__data__shared_prefix__question_len=500)
    spec = spec.set("engine.extra_args", ("--enable-prefix-caching",))
    run = await backend.launch(spec, RunStore().create(spec))
    pipeline = fake.get("tekton.dev/v1", "Pipeline", "exp14", NS)
    tasks = {t["name"]: t for t in pipeline["spec"]["tasks"]}
    assert list(tasks) == ["download-model", "install-inference-perf", "create-exp-config-1", "deploy-model-1",
                           "run-workload-1", "delete-model-1", "raw-upload-1"]
    assert [t["name"] for t in pipeline["spec"]["finally"]] == ["finally-delete-model-1"]
    for name in ("install-inference-perf-blis", "run-workload-inference-perf-blis", "upload-s3", "create-exp-config"):
        assert fake.exists("tekton.dev/v1", "Task", name, NS), name
    profile = {p["name"]: p["value"] for p in tasks["run-workload-1"]["params"]}["profileTemplate"]
    assert profile["load"]["stages"] == [{"rate": 8.0, "duration": 300}, {"rate": 16.0, "duration": 300}]
    assert profile["data"]["shared_prefix"]["question_len"] == 500 and profile["server"]["base_url"] == "STACK_ENDPOINT"
    overrides = {p["name"]: p["value"] for p in tasks["deploy-model-1"]["params"]}["overrides"]
    assert overrides[-1] == 'decode.containers[name="vllm"].args=--enable-prefix-caching'
    pr = fake.get("tekton.dev/v1", "PipelineRun", "exp14", NS)
    params = {p["name"]: p["value"] for p in pr["spec"]["params"]}
    assert params == {"experimentId": "exp14", "model": MODEL, "namespace": NS}
    values = yaml.safe_load((run.store.path / "rendered" / "values.yaml").read_text())
    assert values["stack"]["extra_overrides"] == ['decode.containers[name="vllm"].args=--enable-prefix-caching']
    assert values["upload_target"]["type"] == "s3"

    events = await _collect(backend, run)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.outcome == "succeeded", fin
    phases = {(e.unit, e.state) for e in events if isinstance(e, Phase)}
    assert ("run-workload-1", "Succeeded") in phases and ("raw-upload-1", "Succeeded") in phases
    workload = next(e for e in events if isinstance(e, Phase) and e.unit == "run-workload-1")
    assert workload.expected_s == 600 + 600  # the stages' 600 s and the margin, not the generic 2 h
    prog = [e for e in events if isinstance(e, Progress)][-1]
    assert (prog.completed, prog.total) == (8, 8)
    copied = run.store.results_dir / "exp14-1"
    assert (copied / "results" / "stage_0_lifecycle_metrics.json").exists()
    assert json.loads((copied / "profile.yaml").read_text())["load"]["stages"][0]["rate"] == 8.0
    summary = fin.summary["results"]["exp14-1"]
    assert summary["harness"] == "inference-perf"
    assert [b["name"] for b in summary["benchmarks"]] == ["constant@4/s (stage 0)", "constant@8/s (stage 1)"]
    assert summary["benchmarks"][1]["completed"] == 48
    await backend.registry.run(5)


async def test_campaign_attach_keeps_the_workload_time(campaign):
    from backends.tekton import TektonBackend

    fake, cfg = campaign
    backend, spec = _backend_and_spec(cfg)
    fake.controller.hang["download-model"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    fresh = TektonBackend(backend.settings, backend.profile, registry=backend.registry)
    again = await fresh.attach(RunStore().get(run.id))
    assert again.handle["workload_s"] == 1200.0 and again.handle["tps"] == [1]
    await backend.registry.run(5)


def test_headless_run_prints_the_inference_perf_stages(campaign, capsys, monkeypatch):
    from tui.cli import main

    _fake, cfg = campaign
    code = main(["--config", str(cfg), "tekton", "run", "qwen3-14b", "-p", "camp", "--id", "exp14h", "--yes"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Benchmarks (inference-perf)" in out
    stage = next(line for line in out.splitlines() if "constant@8/s (stage 1)" in line)
    assert "exp14h-1" in stage and " 48 " in stage
