"""`lab replay runs/<id>/manifest.json`: the same cases, config and image again — or an error
that says exactly what differs."""

from __future__ import annotations

from pathlib import Path

from lab.config import Case, LoadedSuite, load_suite
from lab.errors import LabError
from lab.files import read_json
from lab.results.store import canonical_sha256


def load_replay(
    manifest_path: Path, case_ids: list[str] | None
) -> tuple[LoadedSuite, list[Case], str]:
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError) as e:
        raise LabError(f"cannot read manifest {manifest_path}: {e}") from None
    config_path = Path(manifest["config"]["path"])
    if not config_path.exists():
        raise LabError(f"manifest {manifest_path}: config {config_path} no longer exists")
    loaded = load_suite(config_path)
    recorded = {c["id"]: c for c in manifest["cases"]}
    wanted = case_ids or [cid for cid, c in recorded.items() if c.get("attempts")]
    unknown = [c for c in wanted if c not in recorded]
    if unknown:
        raise LabError(
            f"manifest {manifest_path} has no case {', '.join(unknown)}; it has "
            f"{', '.join(recorded)}"
        )
    diffs = []
    for cid in wanted:
        try:
            now = loaded.case_json(cid)
        except KeyError:
            diffs.append(f"case {cid} is no longer in {config_path}")
            continue
        if canonical_sha256(now) != recorded[cid]["sha256"]:
            before = recorded[cid].get("case") or {}
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            diffs.append(f"case {cid} changed in {config_path}: {', '.join(changed)}")
    if diffs:
        raise LabError("cannot replay exactly: " + "; ".join(diffs))
    runtime = manifest.get("runtime") or "docker"
    if runtime == "docker":
        from lab.host.runtimes.registry import get_runtime

        rt = get_runtime("docker")
        rt.check()
        for cid in wanted:
            image, want_id = recorded[cid].get("image"), recorded[cid].get("image_id")
            have = rt.image_id(image) if image else None
            if image and have is None:
                raise LabError(
                    f"case {cid}: image {image} is missing (the run used {want_id}); "
                    "rebuild it with `make images` or load the recorded image"
                )
            if want_id and have and have != want_id:
                raise LabError(f"case {cid}: image {image} is now {have}, the run used {want_id}")
    return loaded, [loaded.case(cid) for cid in wanted], runtime
