import os, sys
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
from vllm.entrypoints.cli.main import main
import vllm.entrypoints.cli.serve as s
s.ServeSubcommand.cmd = staticmethod(lambda args: print("parsed", args.model))
sys.argv = ["vllm", "serve", "m/x", "--host", "127.0.0.1", "--port", "30000", "--gpu-memory-utilization", "0.8"]
main()
