"""The simulator's failure texts carry the phrases of the real vLLM / torch / HF errors."""

from __future__ import annotations

import pytest

from backends.sim import failures


def test_oom_text_is_torchs():
    text = "\n".join(failures.failure_lines("oom"))
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 4.00 GiB." in text
    assert "GPU 0 has a total capacity of 79.19 GiB of which 0.42 GiB is free." in text
    assert text.rstrip().endswith(failures.ENGINE_INIT_FAILED)
    assert "CUDA out of memory" in failures.MARKERS["oom"]


def test_oom_allocation_grows_with_the_overshoot():
    small = failures.oom_lines(1.0)[-1]
    big = failures.oom_lines(4.0)[-1]
    assert "Tried to allocate 2.00 GiB" in small
    assert "Tried to allocate 8.00 GiB" in big


def test_model_not_found_text_is_hugging_faces():
    lines = failures.failure_lines("model-not-found", "acme/nope-7b")
    assert (
        "OSError: acme/nope-7b is not a local folder and is not a valid model identifier listed on "
        "'https://huggingface.co/models'"
    ) in lines
    assert "Repository Not Found for url: https://huggingface.co/acme/nope-7b/resolve/main/config.json." in lines
    assert failures.MODEL_DOES_NOT_EXIST_TEMPLATE.format(model="x") == "The model `x` does not exist."


def test_trust_remote_code_text_is_transformers_and_vllms():
    text = "\n".join(failures.failure_lines("trust-remote-code", "org/custom"))
    assert (
        "Loading org/custom requires you to execute the configuration file in that repo on your local machine. "
        "Make sure you have read the code there to avoid malicious use, then set the option "
        "`trust_remote_code=True` to remove this error."
    ) in text
    assert "`--trust-remote-code` flag in the CLI" in text


def test_engine_dead_text():
    text = "\n".join(failures.failure_lines("crash-after"))
    assert "EngineCore encountered a fatal error." in text
    assert text.rstrip().endswith(
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
        "See stack trace (above) for the root cause."
    )


def test_port_in_use_text_is_uvicorns():
    assert failures.PORT_IN_USE_TEMPLATE.format(host="0.0.0.0", port=8000) == (
        "[Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in use"
    )


def test_every_mode_has_lines_and_a_marker_in_them():
    for mode in failures.FAIL_MODES:
        text = "\n".join(failures.failure_lines(mode))
        assert failures.MARKERS[mode] in text, mode
    with pytest.raises(ValueError, match="unknown failure mode"):
        failures.failure_lines("meteor")
