"""The simulator's command line: vLLM serve arguments, ignored options, --fail, the OOM rule."""

from __future__ import annotations

import pytest

from backends.sim import main as sim_main
from backends.sim.options import (
    DEFAULT_OOM_BUDGET,
    SimUsageError,
    catalog_model_id,
    oom_budget_for,
    parse_args,
    split_argv,
)


def test_serve_word_model_and_known_options():
    opts = parse_args(
        [
            "serve", "meta-llama/Llama-2-7b-hf", "--host", "127.0.0.1", "--port", "0",
            "--served-model-name", "llama", "--max-model-len", "2048", "--max-num-seqs", "8",
            "--max-num-batched-tokens=1024", "-tp", "2",
        ]
    )
    assert opts.model == "meta-llama/Llama-2-7b-hf"
    assert (opts.host, opts.port) == ("127.0.0.1", 0)
    assert opts.served_model_name == "llama"
    assert (opts.max_model_len, opts.max_num_seqs, opts.max_num_batched_tokens) == (2048, 8, 1024)
    assert opts.tensor_parallel_size == 2
    assert opts.ignored == []
    assert opts.non_default["max_model_len"] == 2048
    assert opts.non_default["tensor_parallel_size"] == 2


def test_unknown_vllm_options_are_ignored_in_both_forms():
    opts = parse_args(
        [
            "m", "--dtype", "bfloat16", "--gpu-memory-utilization=0.9", "--enable-prefix-caching",
            "--trust-remote-code", "--swap-space", "4", "--kv-cache-dtype", "fp8", "--enforce-eager",
        ]
    )
    assert opts.model == "m"
    assert opts.trust_remote_code is True  # known, so not in the ignored list
    assert opts.ignored == [
        "--dtype bfloat16",
        "--gpu-memory-utilization=0.9",
        "--enable-prefix-caching",
        "--swap-space 4",
        "--kv-cache-dtype fp8",
        "--enforce-eager",
    ]


def test_boolean_vllm_flag_before_the_model_does_not_eat_it():
    opts = parse_args(["--enable-prefix-caching", "my/model", "--port", "9000"])
    assert opts.model == "my/model"
    assert opts.port == 9000
    assert opts.ignored == ["--enable-prefix-caching"]


def test_unknown_flag_at_the_end_without_value():
    kept, ignored = split_argv(["m", "--some-flag"], {"--port": True})
    assert kept == ["m"]
    assert ignored == ["--some-flag"]


def test_model_flag_and_length_suffixes():
    opts = parse_args(["--model", "x/y", "--max-model-len", "4k"])
    assert opts.model == "x/y"
    assert opts.max_model_len == 4000
    assert parse_args(["x", "--max-model-len", "8K"]).max_model_len == 8192


@pytest.mark.parametrize(
    ("argv", "mode", "count"),
    [
        (["m", "--fail", "oom"], "oom", 0),
        (["m", "--fail=model-not-found"], "model-not-found", 0),
        (["m", "--fail", "trust-remote-code"], "trust-remote-code", 0),
        (["m", "--fail", "crash-after", "3"], "crash-after", 3),
        (["m", "--fail", "crash-after=5"], "crash-after", 5),
        (["m", "--fail", "crash-after:0"], "crash-after", 0),
    ],
)
def test_fail_modes(argv, mode, count):
    opts = parse_args(argv)
    assert (opts.fail, opts.crash_after) == (mode, count)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["m", "--fail", "segfault"], "unknown mode"),
        (["m", "--fail", "crash-after"], "needs a request count"),
        (["m", "--port", "70000"], "port"),
        (["m", "--max-num-seqs", "0"], "positive"),
        (["m", "--speed", "-1"], ">= 0"),
        (["--port", "1"], "MODEL"),
        (["m", "extra"], "unrecognized"),
    ],
)
def test_bad_command_lines(argv, needle):
    with pytest.raises(SimUsageError, match=needle):
        parse_args(argv)


def test_main_reports_usage_errors_with_exit_2(capsys):
    assert sim_main(["m", "--fail", "nope"]) == 2
    err = capsys.readouterr().err
    assert "usage: sweepdeck sim" in err
    assert "unknown mode 'nope'" in err


def test_help_exits_0_and_documents_the_rules(capsys):
    assert sim_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--fail" in out and "--speed" in out and "--oom-budget" in out
    assert "TTFT" in out and "ITL" in out
    assert "max_model_len * max_num_seqs / tensor_parallel_size" in out


def test_speed_zero_means_no_latency():
    assert parse_args(["m", "--speed", "0"]).time_scale == 0.0
    assert parse_args(["m", "--speed", "4"]).time_scale == 0.25
    assert parse_args(["m"]).time_scale == 1.0


def test_disable_log_stats_turns_the_stats_line_off():
    assert parse_args(["m", "--disable-log-stats"]).stats_interval == 0
    assert parse_args(["m"]).stats_interval == 10.0


# --- the documented OOM rule ----------------------------------------------------------
def test_oom_budget_defaults_to_three_quarters_of_the_catalog_settings():
    # Llama-2-7b: 4096 x 256 / TP 1
    assert oom_budget_for("meta-llama/Llama-2-7b-hf", None) == int(0.75 * 4096 * 256)
    assert oom_budget_for("llama2-7b", None) == int(0.75 * 4096 * 256)  # aliases resolve
    assert oom_budget_for("not/in-catalog", None) == DEFAULT_OOM_BUDGET
    assert oom_budget_for("meta-llama/Llama-2-7b-hf", 1000) == 1000


def test_hf_cache_path_maps_to_the_model_id():
    path = "/mimer/NOBACKUP/hub/models--meta-llama--Llama-2-7b-hf/snapshots/0123abcd"
    assert catalog_model_id(path) == "meta-llama/Llama-2-7b-hf"
    assert catalog_model_id("plain/name") == "plain/name"


@pytest.mark.parametrize(
    ("extra", "fails"),
    [
        (["--max-model-len", "8192", "--max-num-seqs", "128", "-tp", "4"], True),  # catalog settings
        (["--max-model-len", "4096", "--max-num-seqs", "128", "-tp", "4"], False),  # halve max_model_len
        (["--max-model-len", "8192", "--max-num-seqs", "64", "-tp", "4"], False),  # halve max_num_seqs
        (["--max-model-len", "8192", "--max-num-seqs", "128", "-tp", "8"], False),  # double TP
    ],
)
def test_oom_fails_at_catalog_settings_and_recovers(extra, fails):
    opts = parse_args(["meta-llama/Llama-3.3-70B-Instruct", "--fail", "oom", *extra])
    assert opts.oom_fails() is fails


def test_oom_never_fails_without_the_flag():
    assert parse_args(["meta-llama/Llama-2-7b-hf", "--max-model-len", "4096"]).oom_fails() is False
