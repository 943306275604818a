"""VRAM emulation: present N GiB per GPU to the server, so an 80 GB card reproduces the OOM of a
32 GB runner. On a GPU a ballast process in the sandbox holds the rest of each card; without a GPU
the reference server's own device-memory accounting (`--device-memory-gib`) plays the card."""

from __future__ import annotations

from lab.contract import TEST_KEY, Ballast
from lab.errors import LabError
from lab.frameworks import get_framework
from lab.frameworks.reference import DEVICE_MEMORY_FLAG
from lab.host.gpus import GpuInfo


def plan_vram(
    case_id: str, vram_gib: float | None, gpus: list[GpuInfo], frameworks: list[str]
) -> tuple[Ballast | None, dict[str, list[str]]]:
    """(ballast for the sandbox, extra server flags per framework) for an emulated size."""
    if vram_gib is None:
        return None, {}
    if gpus:
        for g in gpus:
            total_gib = g.memory_total_mib / 1024
            if vram_gib > total_gib:
                raise LabError(
                    f"case {case_id!r}: vram_gib {vram_gib:g} is more than GPU {g.index} "
                    f"({g.name}) has ({total_gib:.1f} GiB); ask for at most {int(total_gib)}"
                )
        return Ballast(keep_gib=vram_gib, devices=list(range(len(gpus)))), {}
    flags = {fw: get_framework(fw).device_memory_flag for fw in frameworks}
    budgets = {fw: [flag, f"{vram_gib:g}"] for fw, flag in flags.items() if flag}
    if budgets:
        return None, budgets
    if not frameworks:  # kind "test": its launcher hands LAB_SERVER_EXTRA_ARGS to the server,
        # which the shipped tests launch as the reference LLM server
        return None, {TEST_KEY: [DEVICE_MEMORY_FLAG, f"{vram_gib:g}"]}
    raise LabError(
        f"case {case_id!r}: vram_gib {vram_gib:g} needs a GPU to emulate (or the reference "
        "frameworks, which account device memory on the CPU); this sandbox gets no GPU"
    )
