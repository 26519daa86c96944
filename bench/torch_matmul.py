# cuBLAS anchors for bench/coop_probe.ts: the same product shapes in fp32, TF32, bf16 and fp16 (PyTorch eager),
# on the same GPU in the same device call.   usage: python3 bench/torch_matmul.py > torch_matmul.json
import json, sys, time, torch
dev = "cuda"
SHAPES = [  # key, M, N, K, transA, transB (as bench/coop_probe.ts)
    ("square_4096", 4096, 4096, 4096, False, False), ("square_2048", 2048, 2048, 2048, False, False),
    ("gpt2_qkv_M8192", 8192, 2304, 768, False, False), ("gpt2_fc_M8192", 8192, 3072, 768, False, False),
    ("gpt2_proj_M8192", 8192, 768, 3072, False, False), ("gpt2_lmhead_M8192", 8192, 50257, 768, False, True),
    ("gpt2_fc_dx_M8192", 8192, 768, 3072, False, True), ("gpt2_fc_dw_M8192", 768, 3072, 8192, True, False),
    ("ppo_qkv_M736", 736, 2304, 768, False, False), ("ppo_fc_M736", 736, 3072, 768, False, False),
    ("ppo_proj_M736", 736, 768, 3072, False, False), ("ppo_fc_dw_M736", 768, 3072, 736, True, False),
    ("gpt2_qkv_M1024", 1024, 2304, 768, False, False), ("bert_fc_M768", 768, 3072, 768, False, False),
]
def bench(f):
    f(); torch.cuda.synchronize()
    t = time.perf_counter(); f(); torch.cuda.synchronize(); one = time.perf_counter() - t
    n = max(3, min(200, int(0.05 / max(one, 1e-6))))  # ~50 ms of work, synced
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n): f()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / n * 1000
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "products": {}}
for key, M, N, K, tA, tB in SHAPES:
    a = torch.randn(K, M, device=dev) if tA else torch.randn(M, K, device=dev)
    b = torch.randn(N, K, device=dev) if tB else torch.randn(K, N, device=dev)
    row = {}
    for name, dt, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False), ("fp16", torch.float16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x, y = a.to(dt), b.to(dt)
        f = lambda: (x.t() if tA else x) @ (y.t() if tB else y)
        ms = bench(f)
        row[f"{name}_ms"] = round(ms, 4); row[f"{name}_tflops"] = round(2 * M * N * K / ms / 1e9, 2)
    res["products"][key] = row
    print(json.dumps({key: row}), file=sys.stderr, flush=True)
print(json.dumps(res, indent=1))
