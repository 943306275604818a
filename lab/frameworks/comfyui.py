"""comfyui, which sglang's comparison config names and the lab cannot run: what upstream would
start for it, and why neither upstream's nightly nor the lab runs it here.

Read at sgl-project/sglang 03635624690c11ff6ea89d288ca1854b521d9b1c, scripts/ci/utils/diffusion/
comfyui_adapter.py (build_launch_cmd, send_request) and run_comparison.py (run_comparison)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.config import Case


NAME = "comfyui"  # lab/frameworks/names.py NOT_RUN


def launch_preview(case: Case, host: str = "127.0.0.1", port: int = 30000) -> str:
    """Upstream's launch line: the config's python_bin and comfy_root ($VARs unexpanded: they
    name a per-machine ComfyUI checkout and virtualenv), `main.py --listen --port`, serve_args."""
    cfg = case.frameworks[NAME]
    root = cfg.comfy_root or "$COMFY_ROOT"
    argv = [cfg.python_bin or "python3", f"{root.rstrip('/')}/main.py", "--listen", host]
    argv += ["--port", str(port), *cfg.serve_arg_list]
    return " ".join(argv)  # as upstream prints it


def statement(case: Case) -> str:
    workflow = case.comfyui_workflow or f"{case.id}.json"
    return (
        f"comfyui: upstream would start `{launch_preview(case)}`, check the workflow "
        f"comfyui_workflows/{workflow} against /object_info, POST it to /prompt and poll "
        "/history; yet upstream's run_comparison.py runs frameworks in the order sglang, "
        "vllm-omni, lightx2v and never reaches comfyui, so its nightly does not run it either. "
        "The lab has no comfyui adapter: ComfyUI is a per-machine checkout and virtualenv "
        "(COMFY_ROOT, COMFY_PYTHON), not a package or image the lab can build, and its bf16 "
        "weight repacks are not reachable from here"
    )
