from sglang.srt.server_args import prepare_server_args
a = prepare_server_args(["--model-path", "m/x", "--host", "127.0.0.1", "--port", "30000"])
print(a.model_path)
