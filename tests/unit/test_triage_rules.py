"""Pure parts of triage: signature normalization, fit verdicts, the fit bisection."""

from __future__ import annotations

from lab.host.fit import bisect
from lab.results.triage import fit_verdict, normalize_failure, signature


def test_two_oom_lines_differing_only_in_numbers_paths_and_ids_share_a_signature() -> None:
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"
    a = f"{oom} 20.00 GiB (pid 4242) at /tmp/run-1/x.py 0x7f3a9c"
    b = f"{oom} 6.50 GiB (pid 17) at /work/a/b/y.py 0xdead01"
    assert signature("oom", "warmup", a) == signature("oom", "warmup", b)
    assert "Tried to allocate <N> GiB" in normalize_failure(a)
    assert signature("oom", "warmup", a) != signature("oom", "startup", a)  # phase kept
    assert signature("oom", "warmup", a) != signature("crashed", "warmup", a)  # outcome kept


def test_a_secret_never_reaches_a_signature(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz123456")
    text = "401 for token hf_abcdefghijklmnopqrstuvwxyz123456 and API_KEY=s3cr3tvalue"
    sig = normalize_failure(text)
    assert "hf_abc" not in sig and "s3cr3t" not in sig and "redacted" in sig


def test_fit_verdicts_from_headroom() -> None:
    assert fit_verdict(20, 32)[0] == "fits"
    assert fit_verdict(30.6, 32)[0] == "tight"  # 4 % headroom
    assert fit_verdict(33, 32)[0] == "does not fit"


def test_bisect_finds_the_smallest_passing_size_to_the_step() -> None:
    probed: list[float] = []

    def passes(s: float) -> bool:
        probed.append(s)
        return s >= 30.6

    assert bisect(passes, 1, 80, 1) == 31
    assert len(probed) <= 10
    assert bisect(lambda s: False, 1, 80, 1) is None
    assert bisect(lambda s: True, 1, 80, 1) == 1
