"""tektonc-compatible rendering: loops, nested loops, finally, filters, -r merge, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from backends.tekton.render import RenderError, dns, merge_pipelinerun, render_files, render_text, slug
from templates.render import template_path

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tekton"
BLIS = template_path("tekton/blis/pipeline.yaml.j2")


def names(doc, section="tasks"):
    return [t["name"] for t in doc["spec"].get(section) or []]


def test_loop_expansion_sorted_keys_kept_value_order():
    src = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: p}
spec:
  tasks:
    - loopName: grid
      foreach:
        domain:
          zeta: {{ zs }}
          alpha: [b, a]
      tasks:
        - name: t-{{ alpha }}-{{ zeta }}
          params: [{name: x, value: "$(params.x)"}]
"""
    doc = render_text(src, {"zs": [3, 1]})
    # keys sorted (alpha before zeta), each list's order kept
    assert names(doc) == ["t-b-3", "t-b-1", "t-a-3", "t-a-1"]
    assert doc["spec"]["tasks"][0]["params"][0]["value"] == "$(params.x)"


def test_nested_loops_vars_and_finally():
    src = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: nested}
spec:
  tasks:
    - loopName: outer
      foreach: {domain: {m: {{ models | tojson }}}}
      vars:
        label: "{{ m.name | dns }}-{{ m.port }}"
      tasks:
        - name: deploy-{{ label }}
        - loopName: inner
          foreach: {domain: {rate: [1, 2]}}
          tasks:
            - name: load-{{ m.name | slug }}-r{{ rate }}
              runAfter: ["deploy-{{ label }}"]
  finally:
    - loopName: cleanup
      foreach: {domain: {m: {{ models | tojson }}}}
      tasks:
        - name: delete-{{ m.name | dns }}
"""
    values = yaml.safe_load((FIX / "object-loops-values.yaml").read_text())
    doc = render_text(src, values)
    assert names(doc) == [
        "deploy-llama-7b-8080", "load-llama-7b-r1", "load-llama-7b-r2",
        "deploy-qwen-2-5-7b-9090", "load-qwen-2.5-7b-r1", "load-qwen-2.5-7b-r2",
    ]
    assert doc["spec"]["tasks"][1]["runAfter"] == ["deploy-llama-7b-8080"]
    assert names(doc, "finally") == ["delete-llama-7b", "delete-qwen-2-5-7b"]


def test_filters():
    assert dns("Meta-Llama/Llama-3.3_70B") == "meta-llama-llama-3-3-70b"
    long = dns("x" * 100)
    assert len(long) <= 63 and long[-9] == "-"
    assert dns("x" * 100) == long  # deterministic
    assert slug("a b/c:d_e.f") == "a-b-c-d_e.f"


def test_blis_template_renders_from_blis_values_with_pipelinerun():
    doc, values = render_files(BLIS, FIX / "blis-values.yaml", FIX / "blis-pipelinerun.yaml")
    per_tp = ["create-exp-config", "deploy-otel-collector", "deploy-model", "run-workload", "delete-model",
              "delete-otel-collector", "upload"]
    expected = ["download-model", "install-guidellm"] + [f"{n}-tp{tp}" for tp in (2, 4) for n in per_tp]
    assert names(doc) == expected
    assert names(doc, "finally") == [f"finally-{n}-tp{tp}" for tp in (2, 4)
                                     for n in ("delete-model", "delete-otel-collector")]
    assert doc["metadata"]["name"] == "blis-test"
    tasks = {t["name"]: t for t in doc["spec"]["tasks"]}
    deploy = {p["name"]: p["value"] for p in tasks["deploy-model-tp4"]["params"]}
    assert deploy["modelLabel"] == "$(params.experimentId)-4"
    assert "decode.parallelism.tensor=4" in deploy["overrides"]
    assert json.loads(deploy["config"])["decode"]["containers"][0]["image"] == "vllm/vllm-openai:v0.11.0"
    run = {p["name"]: p["value"] for p in tasks["run-workload-tp2"]["params"]}
    assert run["prompt_tokens"] == "70" and run["rate_type"] == "sweep"
    assert tasks["run-workload-tp2"]["retries"] == 3
    assert tasks["upload-tp2"]["taskRef"]["name"] == "upload-s3"


def test_pipelinerun_stack_and_workload_params_deep_merge(tmp_path):
    pr = {"spec": {"params": [
        {"name": "stack", "value": {"treatments": {"tensorParallelism": [8]}, "MAX_NUM_SEQS": 64}},
        {"name": "workload", "value": {"harness": "guidellm"}},
        {"name": "model", "value": "ignored"},
    ]}}
    base = yaml.safe_load((FIX / "blis-values.yaml").read_text())
    merged = merge_pipelinerun(base, pr)
    assert merged["stack"]["treatments"]["tensorParallelism"] == [8]
    assert merged["stack"]["MAX_NUM_SEQS"] == 64
    assert merged["stack"]["MAX_MODEL_LEN"] == 4096  # kept from the base
    assert base["stack"]["MAX_NUM_SEQS"] == 256  # the base is not mutated
    (tmp_path / "pr.yaml").write_text(yaml.safe_dump(pr))
    doc, _ = render_files(BLIS, FIX / "blis-values.yaml", tmp_path / "pr.yaml")
    assert "deploy-model-tp8" in names(doc) and "deploy-model-tp2" not in names(doc)


def test_inference_perf_harness_form(tmp_path):
    values = yaml.safe_load((FIX / "blis-values.yaml").read_text())
    values["workload"] = {"harness": "inference-perf", "profile": "shared_prefix_synthetic.yaml",
                          "treatments": [{"question_len": 100, "output_len": 100}]}
    doc = render_text(BLIS.read_text(), values)
    tasks = {t["name"]: t for t in doc["spec"]["tasks"]}
    assert "install-inference-perf" in tasks
    run = tasks["run-workload-tp2"]
    assert run["taskRef"]["name"] == "run-workload-inference-perf"
    params = {p["name"]: p["value"] for p in run["params"]}
    assert params["profile"] == "shared_prefix_synthetic.yaml"
    assert yaml.safe_load(params["treatments"]) == [{"question_len": 100, "output_len": 100}]


def test_missing_value_error_names_line_and_value():
    values = yaml.safe_load((FIX / "blis-values.yaml").read_text())
    del values["stack"]["MAX_NUM_SEQS"]
    with pytest.raises(RenderError) as err:
        render_text(BLIS.read_text(), values, "pipeline.yaml.j2")
    line = next(i + 1 for i, t in enumerate(BLIS.read_text().splitlines()) if "stack.MAX_NUM_SEQS" in t)
    assert f"pipeline.yaml.j2 line {line}" in err.value.message
    assert "stack.MAX_NUM_SEQS" in err.value.message


def test_missing_loop_variable_error_names_line():
    src = ("apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  tasks:\n"
           "    - loopName: l\n      foreach: {domain: {tp: [1]}}\n      tasks:\n        - name: t-{{ tpp }}\n")
    with pytest.raises(RenderError) as err:
        render_text(src, {}, "x.j2")
    assert "x.j2 line 9" in err.value.message and "'tpp'" in err.value.message


def test_bad_loop_node_and_bad_yaml():
    src = ("apiVersion: v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  tasks:\n"
           "    - loopName: l\n      foreach: {domain: {tp: 3}}\n      tasks: []\n")
    with pytest.raises(RenderError, match="must be a list"):
        render_text(src, {})
    with pytest.raises(RenderError, match="invalid"):
        render_text("a: [\n", {})


def test_cli_render_writes_output_and_never_touches_inputs(tmp_path, capsys):
    from tui.cli import main

    values = tmp_path / "values.yaml"
    values.write_bytes((FIX / "blis-values.yaml").read_bytes())
    before = (values.read_bytes(), values.stat().st_mtime_ns)
    out = tmp_path / "pipeline.yaml"
    assert (
        main(
            [
                "tekton",
                "render",
                "-f",
                str(values),
                "-r",
                str(FIX / "blis-pipelinerun.yaml"),
                "-o",
                str(out),
                "--explain",
            ]
        )
        == 0
    )
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "Pipeline" and len(doc["spec"]["tasks"]) == 16
    assert (values.read_bytes(), values.stat().st_mtime_ns) == before
    assert "deploy-model-tp2" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("stack: {}\n")
    assert main(["tekton", "render", "-f", str(bad)]) != 0
    assert "missing value" in capsys.readouterr().err


def test_inline_jinja_blocks_and_mappings_without_tojson():
    src = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: p}
spec:
  tasks:
    - name: deploy
      params:
        - {name: config, value: {{ helm }}}
    - loopName: chain
      foreach: {domain: {i: [0, 1, 2]}}
      tasks:
        - __jinja__: |
            {% set prev = i - 1 %}
            - name: step-{{ i }}
            {% if i > 0 %}
              runAfter: ["step-{{ prev }}"]
            {% endif %}
"""
    doc = render_text(src, {"helm": {"a": None, "b": [1, True]}})
    assert doc["spec"]["tasks"][0]["params"][0]["value"] == {"a": None, "b": [1, True]}
    assert names(doc) == ["deploy", "step-0", "step-1", "step-2"]
    assert doc["spec"]["tasks"][2]["runAfter"] == ["step-0"] and "runAfter" not in doc["spec"]["tasks"][1]
