import argparse, shlex
from sglang.multimodal_gen.runtime.entrypoints.cli.serve import add_multimodal_gen_serve_args
from sglang.multimodal_gen.runtime.server_args import ServerArgs
argv = shlex.split("--model-path black-forest-labs/FLUX.1-dev --port 30000 --host 127.0.0.1 --strict-ports --master-port 30005 --scheduler-port 30055 --num-gpus 2 --warmup-mode server --component-residency dit=resident --tp-size 2 --warmup-resolutions 1024x1024 --cfg-parallel-size 2 --dit-cpu-offload --text-encoder-cpu-offload --vae-cpu-offload")
p = argparse.ArgumentParser()
add_multimodal_gen_serve_args(p)
a, rest = p.parse_known_args(argv)
s = ServerArgs.from_cli_args(a, rest, default_args={"warmup_mode": "server"})
print(s.model_path, s.num_gpus)
