from lab.frameworks.args import flag_value, has_flag, merge_args


def test_override_replaces_value_in_place_and_collapses_repeats() -> None:
    base = [
        "--warmup-mode",
        "server",
        "--cfg-parallel-size",
        "1",
        "--tp-size",
        "2",
        "--cfg-parallel-size=1",
    ]
    out = merge_args(base, ["--cfg-parallel-size", "2"])
    assert out == ["--warmup-mode", "server", "--cfg-parallel-size", "2", "--tp-size", "2"]


def test_new_flags_are_appended_and_bare_flags_kept() -> None:
    out = merge_args(["--pin-cpu-memory"], ["--dit-cpu-offload", "--mem-fraction-static", "0.7"])
    assert out == ["--pin-cpu-memory", "--dit-cpu-offload", "--mem-fraction-static", "0.7"]
    assert has_flag(out, "--mem-fraction-static", "0.7")
    assert not has_flag(out, "--mem-fraction-static", "0.88")
    assert flag_value(out, "--mem-fraction-static") == "0.7"
