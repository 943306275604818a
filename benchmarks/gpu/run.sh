#!/usr/bin/env bash
# The GPU proof, on the device tool's machines (no network there): install the carried wheels,
# start the carried Docker engine, run the GPU suite. Writes figures under $OUT.
#   bash benchmarks/gpu/run.sh h100-docker | h100-netns | h100-colocate | h200x2 | h200x2-all
#   | h200-stats | h200-triage | h200-s4 | h100-power | h100-transformers
# Needs, in the checkout: .whl/ (cp312 wheels: docker, tenacity, diffusers, pydantic, ...) and
# .device/docker-bundle.tar.xz (from ../shared/tools/docker-bundle.sh); both git-ignored.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# The preinstalled python is a venv under /opt: the carried wheels go beside it (--target),
# first on the import path, so they win over its own (transformers 5.25 over 5.17).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lab-site .whl/*.whl \
  2>&1 | tail -n 2
export PYTHONPATH=/tmp/lab-site:$PWD
case "$1" in h100-power|h100-colocate|h100-transformers) nodocker=1 ;; *) nodocker=0 ;; esac
if [ "$nodocker" = 0 ] && ! docker info >/dev/null 2>&1; then  # these phases: no docker
  mkdir -p /tmp/d && tar -C /tmp/d -xJf .device/docker-bundle.tar.xz
  export PATH=/tmp/d/bin:$PATH
  (LD_LIBRARY_PATH=/tmp/d/lib setsid dockerd --iptables=false --ip-masq=false --bridge=none \
      >/tmp/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
export PATH=/tmp/d/bin:$PATH
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi-$1.csv"
lab() { python3 -m lab.cli "$@"; }
pack() { tar czf "$OUT/$1.tgz" --exclude='artifacts' --exclude='*.png' -C "$OUT" "$2"; rm -rf "${OUT:?}/$2"; }
case "$1" in
  h100-transformers)  # transformers serve 5.25 (carried, first on PYTHONPATH over the preinstalled
    # 5.17), netns, hard cap 4 min: the chat case on cuda, then a 1.5 GiB card (ballast) where the
    # 335 M float32 model OOMs with torch's CUDA text and the bfloat16 rung fits. One tgz + summary.
    python3 -c 'import transformers; print("transformers", transformers.__version__)'
    timeout 30 python3 -m lab.cli models make tiny-llama --out build/models/tiny-llama --if-missing
    timeout 60 python3 -m lab.cli models make tiny-llama --out build/models/llama-335m-f32 \
      --hidden 2048 --layers 5 --heads 16 --if-missing
    timeout 150 python3 -m lab.cli nightly --config configs/gpu-transformers.json --runtime netns \
      --out "$OUT/h100-transformers" 2>&1 | tail -n 8
    python3 benchmarks/gpu/summarize_transformers.py "$OUT/h100-transformers" \
      >"$OUT/h100-transformers-summary.txt" 2>&1
    pack h100-transformers h100-transformers ;;
  h100-docker)  # selftest (5 latencies), fits-80-not-24 ladder, PR #24559 both ways
    timeout 120 python3 -m lab.cli selftest --config configs/gpu.json --runtime docker \
      --out "$OUT/h100-docker" 2>&1 | tail -n 12
    timeout 240 python3 -m lab.cli nightly --config configs/gpu.json \
      --case gpu_xl_t2v_fits80_not24 --case gpu_llm_weight_checker_pr24559 --runtime docker \
      --out "$OUT/h100-docker" 2>&1 | tail -n 30
    timeout 90 python3 -m lab.cli repro pr24559 --config configs/gpu.json --vram-gib 32 \
      --runtime docker --out "$OUT/h100-docker" 2>&1 | tail -n 20
    docker ps -a --format '{{.Names}} {{.Status}}' >"$OUT/h100-docker-leftovers.txt"
    pack h100-docker h100-docker ;;
  h100-netns)  # selftest latencies (docker), the ladder again with netns, the NVML table
    timeout 100 python3 -m lab.cli selftest --config configs/gpu.json --runtime docker \
      --out "$OUT/h100-netns" 2>&1 | tail -n 8
    timeout 180 python3 -m lab.cli nightly --config configs/gpu.json \
      --case gpu_xl_t2v_fits80_not24 --runtime netns --out "$OUT/h100-netns" 2>&1 | tail -n 20
    pack h100-netns h100-netns ;;
  h100-power)  # regression power on real nights (#29): 48 nights x 10 short reference-server
    # cases, a fresh server per night, 8 at once on the one GPU; 3/5/10 % step slowdowns. No
    # docker. Needs ruptures in .whl/. Writes regression_power_gpu.json (+ its log)
    # POWER_BUDGET_S: start no night after it (default 400 s; less when device time is short);
    # POWER_CONCURRENCY (servers at once, default 8), POWER_CASES (of 12 shapes, default 10)
    budget=${POWER_BUDGET_S:-400}
    timeout $((budget + 120)) python3 benchmarks/regression_power_gpu.py --aa 30 --per-level 6 \
      --cases "${POWER_CASES:-10}" --concurrency "${POWER_CONCURRENCY:-8}" --budget-s "$budget" --out "$OUT/regression_power_gpu.json" \
      >"$OUT/h100-power.log" 2>&1; tail -n 40 "$OUT/h100-power.log" ;;
  h100-colocate)  # GPU sharing (#30): the 12-case gpu-colocate suite alone (no history: every
    # case exclusive; its peaks are the history), then co-located by the learned estimates, same
    # --out. Figures: colocate.json (device, wall both ways, failures, peak VRAM per GPU, placements)
    timeout 330 python3 -m lab.cli nightly --config configs/gpu-colocate.json --runtime netns \
      --out "$OUT/h100-colocate" 2>&1 | tail -n 4
    python3 -m lab.cli list --config configs/gpu-colocate.json --plan --out "$OUT/h100-colocate" \
      2>&1 | tail -n 12
    timeout 150 python3 -m lab.cli nightly --config configs/gpu-colocate.json --runtime netns \
      --out "$OUT/h100-colocate" 2>&1 | tail -n 4
    python3 benchmarks/gpu/colocate.py "$OUT/h100-colocate" "$OUT/colocate.json"
    rm -rf "${OUT:?}/h100-colocate" ;;  # two files back: colocate.json and the nvidia-smi csv
  h100-latency)  # the spread of 5 latencies of a compute-bound case, then the NVML table
    timeout 150 python3 -m lab.cli nightly --config configs/gpu.json --case gpu_large_t2i_latency \
      --runtime docker --out "$OUT/h100-latency" 2>&1 | tail -n 8
    pack h100-latency h100-latency
    timeout 330 python3 benchmarks/gpu/peak_memory.py "$OUT/peak-memory-h100.json" small medium \
      large xl 2>&1 | tail -n 16 ;;
  h200x2-all)  # everything in one command when device time is short
    timeout 420 python3 -m lab.cli nightly --config configs/gpu.json --case gpu_medium_side_a \
      --case gpu_medium_side_b --case gpu_medium_t2i_1024 --case gpu_large_t2v_cfg_parallel \
      --case gpu_xl_t2v_fits80_not24 --runtime docker --out "$OUT/h200x2-all" 2>&1 | tail -n 40
    timeout 150 python3 -m lab.cli repro pr24559 --config configs/gpu.json --vram-gib 32 \
      --runtime docker --out "$OUT/h200x2-all" 2>&1 | tail -n 20
    pack h200x2-all h200x2-all ;;
  h200x2)
    lab nightly --config configs/gpu.json --case gpu_large_t2v_cfg_parallel \
      --case gpu_medium_side_a --case gpu_medium_side_b --runtime docker \
      --out "$OUT/h200x2-docker" 2>&1 | tail -n 40
    pack h200x2-docker h200x2-docker
    timeout 240 python3 benchmarks/gpu/peak_memory.py "$OUT/peak-memory-h200x2.json" large \
      2>&1 | tail -n 8 ;;
  h200-llm)  # PR #24559 as sglang wrote it: an e2e test file launching an LLM server (ref-llm://
    # qwen3-0.6b). Under 32 GiB: oom at 0.88 (torch's CUDA text, from the test's output), then
    # degraded at 0.7; on the full card: passed at 0.88. Figures: h200-llm-figures.txt
    timeout 200 python3 -m lab.cli repro pr24559 --config configs/gpu.json --vram-gib 32 \
      --runtime docker --out "$OUT/h200-llm" 2>&1 | tail -n 12
    timeout 150 python3 -m lab.cli nightly --config configs/gpu.json \
      --case gpu_llm_weight_checker_pr24559 --runtime docker --out "$OUT/h200-llm" 2>&1 | tail -n 8
    python3 - "$OUT/h200-llm" >"$OUT/h200-llm-figures.txt" <<'PY'
import json, pathlib, sys
for run in sorted(pathlib.Path(sys.argv[1]).glob("2*/results.json")):
    r = json.loads(run.read_text())
    for c in r["cases"]:
        print(run.parent.name, c["case_id"], c["outcome"], "vram_gib", c.get("vram_gib"))
        for a in c["attempts"]:
            f = a["frameworks"][0]
            caught = (f.get("stopped_at") or 0) - (f.get("fatal_line_at") or 0)
            print(f"  {a['rung']}: {a['outcome']} {a['reason'][:160]!r}",
                  f"fatal->stopped {caught:.3f} s" if f.get("fatal_line_at") else "",
                  "LAB_SERVER_EXTRA_ARGS=" + f["env"].get("LAB_SERVER_EXTRA_ARGS", ""))
PY
    grep -h "memory: device" "$OUT"/h200-llm/2*/logs/*.log >>"$OUT/h200-llm-figures.txt"
    cat "$OUT/h200-llm-figures.txt"
    pack h200-llm h200-llm ;;
  h200-stats)  # ballast start → memory held, driver API vs torch; its phase time in a ladder;
    # the medium case with target_mde_pct 2 (repeats taken, CI and MDE reached, why it stopped)
    timeout 120 python3 benchmarks/gpu/ballast_time.py "$OUT/ballast-time-h200.json" \
      --keep-gib 24 --runs 3 2>&1 | tail -n 4
    timeout 150 python3 -m lab.cli nightly --config configs/gpu.json --case gpu_xl_t2v_fits80_not24 \
      --runtime netns --out "$OUT/h200-stats" 2>&1 | tail -n 12
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
d["cases"] = [dict(c, target_mde_pct=2.0, measure_budget_s=100.0) for c in d["cases"]
              if c["id"] == "gpu_medium_t2i_1024"]
json.dump(d, open(sys.argv[2], "w"))' configs/gpu.json configs/gpu-stats.json
    timeout 200 python3 -m lab.cli nightly --config configs/gpu-stats.json --case gpu_medium_t2i_1024 \
      --runtime netns --out "$OUT/h200-stats" 2>&1 | tail -n 8
    python3 -c 'import json, glob
for p in sorted(glob.glob("'"$OUT"'/h200-stats/*/attempts/*/result.json")):
    r = json.load(open(p))
    for f in r["frameworks"]:
        print(r["case_id"], r["rung"], "ballast_s", r.get("phase_timings_s", {}).get("ballast"),
              "n", f["measurement_count"], "stop", f.get("measurement_stop"),
              "mde", f.get("measurement_mde_pct"))
for p in sorted(glob.glob("'"$OUT"'/h200-stats/*/results.json")):
    for row in json.load(open(p))["results"]:
        print(row["case_id"], row["measurement_count"], row["latency_s"], row["latency_ci95_s"],
              row["latency_cv_pct"], row["mde_pct"])' | tee "$OUT/h200-stats-summary.txt"
    pack h200-stats h200-stats ;;
  h200-triage)  # lab fit bisects the medium case's card size to 1 GiB (ballast), one run dir;
    # a nightly of the same case on the whole card gives its peak to set beside the boundary.
    # Figures: h200-triage-fit.txt (size → rung → peak → latency, boundary), fit.json in the tgz
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
d["fleet"] = [{"name": "rtx4090", "vram_gib": 24}, {"name": "h200", "vram_gib": 141}]
d["cases"] = [dict(c, measurement_repeats=1, warmup_requests=0, num_inference_steps=4)
              for c in d["cases"] if c["id"] == "gpu_medium_t2i_1024"]
json.dump(d, open(sys.argv[2], "w"))' configs/gpu.json configs/gpu-fit.json
    timeout 100 python3 -m lab.cli nightly --config configs/gpu-fit.json --runtime netns \
      --out "$OUT/h200-triage" 2>&1 | tail -n 4
    timeout 330 python3 -m lab.cli fit gpu_medium_t2i_1024 --config configs/gpu-fit.json \
      --lo 1 --hi 40 --runtime netns --out "$OUT/h200-triage" 2>&1 | tee "$OUT/h200-triage-fit.txt" \
      | tail -n 14
    grep -h "Fleet fit" -A4 "$OUT"/h200-triage/2*/summary.md | tee -a "$OUT/h200-triage-fit.txt"
    pack h200-triage h200-triage ;;
  h200-s4)  # after #14's restructuring, on one H200, docker: (a) a mixed suite where two images
    # are missing runs the host-image cases (one OOMs at 24 GiB and passes degraded), skips the
    # others with the command that gets the image, exit 0; --fail-on-skipped exits 1; (b) --gpus 7
    # exits 2, nothing started; (c) --dry-run under --out; (d) repro pr24559 at 32 GiB: oom, then
    # degraded; (e) Ctrl-C mid-measurement: exit 130, no container, no GPU process left; (f) two
    # nightlies at once each name the other as sharing the host. Figures: h200-s4-figures.txt
    python3 - configs/gpu.json configs/nightly.json configs/gpu-mixed.json <<'PY'
import json, sys
from lab.host.plan import default_image
gpu, nightly = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
keep = [c for c in gpu["cases"] if c["id"] in ("gpu_medium_t2i_1024", "gpu_xl_t2v_fits80_not24")]
wan = next(c for c in nightly["cases"] if c["id"] == "wan22_ti2v_5b_720p")
ref = dict(next(c for c in gpu["cases"] if c["id"] == "gpu_medium_side_a"), id="ref_in_its_image",
           image=default_image("reference"))
gpu["cases"] = keep + [dict(wan, image=default_image("sglang")), ref]
gpu["test_image_url"] = nightly["test_image_url"]
json.dump(gpu, open(sys.argv[3], "w"), indent=1)
PY
    F="$OUT/h200-s4-figures.txt"
    { echo "== (a) mixed suite, docker"; } >"$F"
    timeout 300 python3 -m lab.cli nightly --config configs/gpu-mixed.json --runtime docker \
      --out "$OUT/h200-s4" 2>&1 | tail -n 14 | tee -a "$F"; echo "exit ${PIPESTATUS[0]}" | tee -a "$F"
    timeout 60 python3 -m lab.cli nightly --config configs/gpu-mixed.json --runtime docker \
      --case wan22_ti2v_5b_720p --fail-on-skipped --out "$OUT/h200-s4" 2>&1 | tail -n 4 | tee -a "$F"
    echo "exit ${PIPESTATUS[0]} (--fail-on-skipped)" | tee -a "$F"
    echo "== (b) --gpus 7" | tee -a "$F"
    timeout 60 python3 -m lab.cli nightly --config configs/gpu.json --gpus 7 --runtime docker \
      --out "$OUT/h200-s4" 2>&1 | tail -n 3 | tee -a "$F"; echo "exit ${PIPESTATUS[0]}" | tee -a "$F"
    echo "== (c) --dry-run --out $OUT/dry" | tee -a "$F"
    timeout 60 python3 -m lab.cli nightly --config configs/gpu-mixed.json --runtime docker \
      --case gpu_medium_t2i_1024 --dry-run --out "$OUT/dry" 2>&1 | head -n 12 | tee -a "$F"
    echo "== (d) repro pr24559 --vram-gib 32" | tee -a "$F"
    timeout 200 python3 -m lab.cli repro pr24559 --config configs/gpu.json --vram-gib 32 \
      --runtime docker --out "$OUT/h200-s4" 2>&1 | tail -n 8 | tee -a "$F"; echo "exit ${PIPESTATUS[0]}" | tee -a "$F"
    echo "== (e) Ctrl-C 40 s into gpu_large_t2i_latency" | tee -a "$F"
    python3 -m lab.cli nightly --config configs/gpu.json --case gpu_large_t2i_latency \
      --runtime docker --out "$OUT/h200-s4" >"$OUT/ctrl-c.log" 2>&1 &
    pid=$!; sleep 40; t0=$(date +%s.%N); kill -INT $pid; wait $pid; rc=$?; t1=$(date +%s.%N)
    tail -n 6 "$OUT/ctrl-c.log" | tee -a "$F"
    echo "exit $rc after $(python3 -c "print(round($t1-$t0, 2))") s; containers left:" \
      "$(docker ps -aq --filter label=nightly-lab.run | wc -l);" \
      "GPU processes left: $(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l)" | tee -a "$F"
    echo "== (f) two nightlies at once" | tee -a "$F"
    for c in gpu_medium_side_a gpu_medium_side_b; do
      timeout 200 python3 -m lab.cli nightly --config configs/gpu.json --case $c --runtime docker \
        --out "$OUT/h200-s4" >"$OUT/$c.log" 2>&1 &
    done; wait
    python3 - "$OUT/h200-s4" <<'PY' | tee -a "$F"
import json, pathlib, sys
for run in sorted(pathlib.Path(sys.argv[1]).glob("2*/results.json")):
    r = json.loads(run.read_text())
    print(run.parent.name, r.get("kind"), r["status"], "commit", r.get("commit_sha"),
          r.get("commit_source"), "shared", r.get("shared_host"), r.get("shared_with"))
    for c in r["cases"]:
        print("  ", c["case_id"], c["outcome"], c.get("degraded_rung") or "", c["reason"][:150])
        for a in c["attempts"]:
            f = a["frameworks"][0] if a["frameworks"] else {}
            caught = (f.get("stopped_at") or 0) - (f.get("fatal_line_at") or 0)
            print("     ", a["rung"], a["outcome"], repr(a["reason"][:140]),
                  f"fatal->stopped {caught:.3f} s" if f.get("fatal_line_at") else "",
                  "log" if f.get("log_path") else "NO LOG")
PY
    pack h200-s4 h200-s4 ;;
esac
