"""PyTorch CPU anchor for `bench/cpu.ts`: the four workloads of `bench/cpu_work.ts`, fp32 on the CPU.

Self-contained (no `transformers`): GPT-2 and BERT are written out below with Hugging Face's math
(GPT-2: learned positions, pre-LN blocks, gelu_new MLP, fused c_attn Conv1D, causal attention scaled
by 1/sqrt(d), tied LM head, dropout; BERT: post-LN, erf gelu, token types, tanh pooler, classifier).

Workloads (each timed as the minimum over `--repeats` runs after warm-up):
  train_step         demo GPT-2 (2 layers, 64 wide), B16xT32: forward + LM loss + backward + AdamW step + zero_grad
  generate           the same GPT-2, 16 prompts x 6 tokens, 12 sampled tokens each with a KV cache
  ppo_iteration      classic TRL PPOTrainer math (as ../shared/gpu/anchors/torch_ppo.py), batch 16, 4 epochs x mb 4
  gpt2_124m_forward  GPT-2 124M, eval, no grad, B1xT64 -> logits

usage: /usr/bin/python3 bench/torch_cpu.py [--threads N] [--only a,b] [--repeats N] [--small]
Prints one JSON object on stdout.
"""
import argparse
import copy
import json
import math
import platform
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

WORKLOADS = ["train_step", "generate", "ppo_iteration", "gpt2_124m_forward"]

# ----------------------------------------------------------------------------- shapes
# Keep in step with FULL / SMALL in bench/cpu_work.ts (bench/cpu.ts warns when the reported shapes differ).
DEMO = dict(n_layer=2, n_embd=64, n_head=2, vocab_size=1024, n_positions=64)
REWARD = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=128, num_labels=2)
FULL = dict(
    train=dict(batch=16, seq=32),
    generate=dict(prompts=16, prompt_len=6, new_tokens=12),
    ppo=dict(batch=16, query=6, response=12, epochs=4, mini=4),
    big=dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, batch=1, seq=64),
)
SMALL = dict(
    train=dict(batch=4, seq=16),
    generate=dict(prompts=4, prompt_len=4, new_tokens=4),
    ppo=dict(batch=4, query=4, response=4, epochs=1, mini=2),
    big=dict(n_layer=2, n_embd=128, n_head=2, vocab_size=1024, n_positions=64, batch=1, seq=16),
)


# ----------------------------------------------------------------------------- GPT-2 (Hugging Face math)
class Conv1D(nn.Module):
    """HF's Conv1D: a linear layer whose weight is stored [in, out] (y = x @ W + b)."""

    def __init__(self, n_out, n_in):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


def gelu_new(x):
    """GPT-2's tanh approximation of GELU, written out as transformers' NewGELUActivation does."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        e, self.n_head = c["n_embd"], c["n_head"]
        self.head_dim = e // self.n_head
        self.c_attn = Conv1D(3 * e, e)  # fused q, k, v
        self.c_proj = Conv1D(e, e)
        self.attn_dropout = nn.Dropout(c["attn_pdrop"])
        self.resid_dropout = nn.Dropout(c["resid_pdrop"])
        n = c["n_positions"]
        self.register_buffer("bias", torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n), persistent=False)

    def split(self, x):  # [B, T, E] -> [B, H, T, D]
        return x.view(x.shape[0], x.shape[1], self.n_head, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, past=None):
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=2)
        q, k, v = self.split(q), self.split(k), self.split(v)
        if past is not None:  # KV cache: keys and values of the earlier positions
            k, v = torch.cat((past[0], k), dim=-2), torch.cat((past[1], v), dim=-2)
        present = (k, v)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        tq, tk = q.shape[-2], k.shape[-2]
        causal = self.bias[:, :, tk - tq:tk, :tk]
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        w = self.attn_dropout(F.softmax(w, dim=-1))
        y = torch.matmul(w, v).permute(0, 2, 1, 3).reshape(x.shape)
        return self.resid_dropout(self.c_proj(y)), present


class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = Conv1D(4 * c["n_embd"], c["n_embd"])
        self.c_proj = Conv1D(c["n_embd"], 4 * c["n_embd"])
        self.dropout = nn.Dropout(c["resid_pdrop"])

    def forward(self, x):
        return self.dropout(self.c_proj(gelu_new(self.c_fc(x))))


class GPT2Block(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c["n_embd"], eps=1e-5)
        self.attn = GPT2Attention(c)
        self.ln_2 = nn.LayerNorm(c["n_embd"], eps=1e-5)
        self.mlp = GPT2MLP(c)

    def forward(self, x, past=None):
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


class GPT2LMHeadModel(nn.Module):
    """GPT-2 with the LM head tied to the token embedding. forward -> (logits, last hidden state, presents)."""

    def __init__(self, n_layer, n_embd, n_head, vocab_size, n_positions, pdrop=0.1):
        super().__init__()
        c = dict(n_embd=n_embd, n_head=n_head, n_positions=n_positions, attn_pdrop=pdrop, resid_pdrop=pdrop)
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.drop = nn.Dropout(pdrop)
        self.h = nn.ModuleList([GPT2Block(c) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        for emb in (self.wte, self.wpe):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, ids, past=None, labels=None):
        start = 0 if past is None else past[0][0].shape[-2]
        pos = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
        x = self.drop(self.wte(ids) + self.wpe(pos))
        presents = []
        for i, block in enumerate(self.h):
            x, p = block(x, None if past is None else past[i])
            presents.append(p)
        hidden = self.ln_f(x)
        logits = F.linear(hidden, self.wte.weight)  # tied LM head, no bias
        loss = None
        if labels is not None:  # shifted LM loss: position t predicts token t + 1
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return logits, hidden, presents, loss


@torch.no_grad()
def sample(model, prompts, new_tokens):
    """HF `generate(do_sample=True, top_k=0, top_p=1.0)` without EOS: prefill, then one token at a time on the cache."""
    logits, _, past, _ = model(prompts)
    out = [prompts]
    for i in range(new_tokens):
        probs = F.softmax(logits[:, -1, :], dim=-1)
        nxt = torch.multinomial(probs, num_samples=1)
        out.append(nxt)
        if i + 1 < new_tokens:
            logits, _, past, _ = model(nxt, past)
    return torch.cat(out, dim=1)


# ----------------------------------------------------------------------------- BERT (Hugging Face math)
class BertLayer(nn.Module):
    """Post-LN encoder layer: LN(x + attn(x)), then LN(h + ffn(h)) with erf GELU."""

    def __init__(self, c):
        super().__init__()
        h, self.n_head = c["hidden_size"], c["num_attention_heads"]
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out, self.ln_attn = nn.Linear(h, h), nn.LayerNorm(h, eps=1e-12)
        self.inter, self.out = nn.Linear(h, c["intermediate_size"]), nn.Linear(c["intermediate_size"], h)
        self.ln_out = nn.LayerNorm(h, eps=1e-12)
        self.drop = nn.Dropout(0.1)

    def forward(self, x, mask_bias):
        b, t, h = x.shape
        split = lambda y: y.view(b, t, self.n_head, h // self.n_head).permute(0, 2, 1, 3)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(h // self.n_head) + mask_bias
        ctx = torch.matmul(self.drop(F.softmax(w, dim=-1)), v).permute(0, 2, 1, 3).reshape(b, t, h)
        a = self.ln_attn(self.drop(self.attn_out(ctx)) + x)
        return self.ln_out(self.drop(self.out(F.gelu(self.inter(a)))) + a)


class BertForSequenceClassification(nn.Module):
    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, num_labels):
        super().__init__()
        c = dict(hidden_size=hidden_size, num_attention_heads=num_attention_heads, intermediate_size=intermediate_size)
        self.word = nn.Embedding(vocab_size, hidden_size)
        self.position = nn.Embedding(512, hidden_size)
        self.token_type = nn.Embedding(2, hidden_size)
        self.ln_emb, self.drop = nn.LayerNorm(hidden_size, eps=1e-12), nn.Dropout(0.1)
        self.layers = nn.ModuleList([BertLayer(c) for _ in range(num_hidden_layers)])
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids))
        x = self.drop(self.ln_emb(x))
        mask_bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # [CLS]
        return self.classifier(self.drop(pooled))


# ----------------------------------------------------------------------------- timing
def sig(x):
    """Four significant digits (keeps the JSON short)."""
    return float(f"{x:.4g}")


def time_min(fn, warmup, repeats):
    """Runs fn `warmup` times untimed, then `repeats` times; returns (min ms, every timed ms)."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(sig((time.perf_counter() - t) * 1e3))
    return min(runs), runs


# ----------------------------------------------------------------------------- workloads
def train_step(s, a):
    b, t = s["train"]["batch"], s["train"]["seq"]
    model = GPT2LMHeadModel(**DEMO, pdrop=0.1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    ids = torch.randint(0, DEMO["vocab_size"], (b, t))

    def step():
        model(ids, labels=ids)[3].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    ms, runs = time_min(step, a.warmup, a.repeats or 20)
    return dict(ms=ms, runs_ms=runs, shape=dict(**DEMO, batch=b, seq=t))


def generate(s, a):
    g = s["generate"]
    model = GPT2LMHeadModel(**DEMO, pdrop=0.1).eval()
    prompts = torch.randint(0, DEMO["vocab_size"], (g["prompts"], g["prompt_len"]))
    ms, runs = time_min(lambda: sample(model, prompts, g["new_tokens"]), a.warmup, a.repeats or 20)
    return dict(ms=ms, runs_ms=runs, shape=dict(**DEMO, **g))


def ppo_iteration(s, a):
    """One PPO iteration with the classic TRL PPOTrainer math, following torch_ppo.py's structure."""
    p = s["ppo"]
    policy = GPT2LMHeadModel(**DEMO, pdrop=0.0)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)  # frozen reference
    vhead = nn.Linear(DEMO["n_embd"], 1)
    rm = BertForSequenceClassification(**REWARD).eval().requires_grad_(False)
    opt = torch.optim.Adam(list(policy.parameters()) + list(vhead.parameters()), lr=1.41e-5)
    kl_coef, gamma, lam, clip, clipv, vf_coef = 0.2, 1.0, 0.95, 0.2, 0.2, 0.1

    def logp_values(model, ids, with_values):
        logits, hidden, _, _ = model(ids)
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        v = vhead(hidden[:, :-1]).squeeze(-1) if with_values else None
        return lp, v

    def iteration():
        t = {}
        s0 = time.perf_counter()
        q = torch.randint(0, DEMO["vocab_size"], (p["batch"], p["query"]))
        policy.eval()
        ids = sample(policy, q, p["response"])
        t["generate_ms"] = (time.perf_counter() - s0) * 1e3
        s0 = time.perf_counter()
        with torch.no_grad():
            scores = rm(ids[:, p["query"]:] % REWARD["vocab_size"])[:, 1]
            old_lp, old_v = logp_values(policy, ids, True)
            ref_lp, _ = logp_values(ref, ids, False)
            r0 = p["query"] - 1  # first response position in the shifted sequence
            old_lp, old_v, ref_lp = old_lp[:, r0:], old_v[:, r0:], ref_lp[:, r0:]
            rewards = -kl_coef * (old_lp - ref_lp)  # per-token KL penalty
            rewards[:, -1] += scores
            adv = torch.zeros_like(rewards)
            last = 0
            for i in reversed(range(rewards.shape[1])):  # GAE
                nv = old_v[:, i + 1] if i + 1 < rewards.shape[1] else 0.0
                last = rewards[:, i] + gamma * nv - old_v[:, i] + gamma * lam * last
                adv[:, i] = last
            returns = adv + old_v
            adv = (adv - adv.mean()) * torch.rsqrt(adv.var() + 1e-8)  # whitened
        t["score_and_forward_ms"] = (time.perf_counter() - s0) * 1e3
        s0 = time.perf_counter()
        policy.train()
        for _ in range(p["epochs"]):
            for mb in torch.randperm(p["batch"]).split(p["mini"]):
                lp, v = logp_values(policy, ids[mb], True)
                lp, v = lp[:, r0:], v[:, r0:]
                vclip = torch.clamp(v, old_v[mb] - clipv, old_v[mb] + clipv)
                vf = 0.5 * torch.max((v - returns[mb]) ** 2, (vclip - returns[mb]) ** 2).mean()
                ratio = torch.exp(lp - old_lp[mb])
                pg = torch.max(-adv[mb] * ratio, -adv[mb] * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
                opt.zero_grad(set_to_none=True)
                (pg + vf_coef * vf).backward()
                opt.step()
        t["optimize_ms"] = (time.perf_counter() - s0) * 1e3
        t["ms"] = t["generate_ms"] + t["score_and_forward_ms"] + t["optimize_ms"]
        return {k: sig(v) for k, v in t.items()}

    for _ in range(a.warmup):
        iteration()
    runs = [iteration() for _ in range(a.repeats or 8)]
    best = min(runs, key=lambda r: r["ms"])  # phases of the fastest iteration
    return dict(**best, runs_ms=[r["ms"] for r in runs], shape=dict(**DEMO, reward=REWARD, **p))


def gpt2_124m_forward(s, a):
    c = dict(s["big"])
    b, t = c.pop("batch"), c.pop("seq")
    model = GPT2LMHeadModel(**c).eval()
    ids = torch.randint(0, c["vocab_size"], (b, t))

    def fwd():
        with torch.no_grad():
            model(ids)

    ms, runs = time_min(fwd, a.warmup, a.repeats or 20)
    return dict(ms=ms, runs_ms=runs, shape=dict(**c, batch=b, seq=t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--only", default="", help="comma-separated workloads (default: all)")
    ap.add_argument("--repeats", type=int, default=0, help="timed runs per workload (default 20; PPO 8)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    ap.add_argument("--small", action="store_true", help="tiny shapes (smoke test)")
    a = ap.parse_args()
    only = [w for w in a.only.split(",") if w] or WORKLOADS
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        sys.exit(f"unknown workload(s) {unknown}; known: {WORKLOADS}")
    if a.small:
        a.repeats, a.warmup = a.repeats or 2, min(a.warmup, 1)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    s = SMALL if a.small else FULL
    results = {}
    for w in only:
        t0 = time.perf_counter()
        try:
            results[w] = globals()[w](s, a)
        except Exception as e:  # one failing workload does not stop the others
            results[w] = dict(error=f"{type(e).__name__}: {e}")
        results[w]["wall_s"] = round(time.perf_counter() - t0, 2)
        print(f"torch_cpu: {w}: {results[w].get('ms', results[w].get('error'))}", file=sys.stderr)
    print(json.dumps(dict(impl="torch", torch=torch.__version__, python=platform.python_version(),
                          threads=torch.get_num_threads(), small=a.small, results=results)))


if __name__ == "__main__":
    main()
