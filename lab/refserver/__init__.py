"""The reference diffusion server: `python -m lab.refserver --model-path ref://tiny ...`.

A stand-in for sglang's diffusion server that runs anywhere (CPU CI, workstation, H100) with no
download: diffusers' own FluxTransformer2DModel, AutoencoderKL and FlowMatchEulerDiscreteScheduler
plus a small byte-level text encoder of ours, all with random weights from a fixed seed. It serves
sglang's HTTP surface, its memory modes (cfg-parallel, CPU offload) for real, an emulated device
budget (--device-memory-gib) that fails with torch's own OutOfMemoryError, and the fault injection
the lab's tests rely on. See README.md beside this file.

Importing this package is cheap: torch and diffusers are imported only once a server starts.
"""

from lab import __version__

# What both reference servers answer as `version` at GET /server_info (sglang's endpoint).
SERVER_VERSION = f"nightly-lab-refserver {__version__}"
