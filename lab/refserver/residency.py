"""Where a component's weights live, and moving them to the device only while it runs.

resident:  on the device for the server's life (charged to the ledger once, at start).
component: on the CPU; the whole component is copied to the device for its stage and dropped
           after (the device copy is freed; the CPU copy is kept, so nothing is copied back).
layerwise: the transformer's non-block weights for the denoise stage, and each block's weights
           only while that block runs (forward hooks), so one block is on the device at a time.
On a CPU-only machine the copies are no-ops; the ledger charges exactly what would move.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lab.refserver.budget import DeviceLedger


class _Weights:
    """The parameters of some modules, with their CPU home copies."""

    def __init__(self, params: list[nn.Parameter], element_size: int) -> None:
        self.params = params
        self.home = [p.data for p in params]
        self.nbytes = sum(p.numel() for p in params) * element_size

    def load(self, device: torch.device) -> None:
        if device.type == "cpu":
            return
        for param, home in zip(self.params, self.home, strict=True):
            param.data = home.to(device, non_blocking=True)

    def drop(self) -> None:
        for param, home in zip(self.params, self.home, strict=True):
            param.data = home


class Residency:
    """Built after the module's weights are materialized: it keeps their CPU home copies."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        mode: str,
        *,
        device: torch.device,
        ledger: DeviceLedger,
        element_size: int,
        blocks: list[nn.Module] | None = None,
    ) -> None:
        self.name = name
        self.mode = mode
        self.device = device
        self.ledger = ledger
        if mode == "resident":
            return  # charged once, when the weights were placed
        if mode == "component":
            self.rest = _Weights(list(module.parameters()), element_size)
            return
        if mode != "layerwise" or not blocks:
            raise ValueError(f"bad residency {mode!r} for {name}")
        in_blocks = {id(p) for b in blocks for p in b.parameters()}
        rest = [p for p in module.parameters() if id(p) not in in_blocks]
        self.rest = _Weights(rest, element_size)
        for index, block in enumerate(blocks):
            self._hook_block(index, block, _Weights(list(block.parameters()), element_size))

    def _hook_block(self, index: int, block: nn.Module, weights: _Weights) -> None:
        tag = f"{self.name} block {index} weights"

        def before(_module: nn.Module, _args: object) -> None:
            self.ledger.alloc(tag, weights.nbytes)
            weights.load(self.device)

        def after(_module: nn.Module, _args: object, _output: object) -> None:
            weights.drop()
            self.ledger.free(tag)

        block.register_forward_pre_hook(before)
        block.register_forward_hook(after)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The component's stage: its offloaded weights are on the device for the duration."""
        if self.mode == "resident":
            yield
            return
        tag = f"{self.name} weights"
        self.ledger.alloc(tag, self.rest.nbytes)
        try:
            self.rest.load(self.device)
            yield
        finally:
            self.rest.drop()
            self.ledger.free(tag)
