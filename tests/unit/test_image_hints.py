"""A case skipped for a missing image says the exact command that builds or loads it."""

from __future__ import annotations

from lab.frameworks.sglang import SGLANG_TAG
from lab.host.plan import default_image
from lab.host.suite_run import how_to_get


def test_the_sglang_image_hint_names_its_base_image_and_how_to_load_it() -> None:
    hint = how_to_get(default_image("sglang"))
    assert "`docker/build-images.sh sglang`" in hint
    assert f"lmsysorg/sglang:{SGLANG_TAG}" in hint and "`docker load -i FILE`" in hint


def test_the_lab_images_are_built_by_make_images() -> None:
    assert how_to_get(default_image("reference")) == "build it with `make images`"
    assert how_to_get("nightly-lab/host-empty:latest") == "build it with `make images`"
