"""
GPT and the YuriiFormer family (Zimin, Polyanskiy, Rigollet, arXiv 2601.23236) in one file.

A transformer layer is read as one step of an optimiser acting on the token embeddings X: attention
is a gradient step on an interaction energy, the MLP a gradient step on a potential energy. The
variants differ only in how a layer combines its calls to these two "oracles" into an update,
chosen by two GPTConfig fields:

residual ("the optimiser"), per substep:
    gd        X = X + Oracle(LN(X))                                  (plain pre-LN GPT)
    polyak    V = LN_v(beta * V + gamma * Oracle(LN(X)));  X = X + V  (heavy ball)
    nesterov  Xin = X + mu * V                                        (lookahead)
              V   = LN_v(beta * V + gamma * Oracle(LN(Xin)))
              X   = X + V                                             (YuriiFormer)
splitting ("how the two energies share a layer"), with oracle calls per layer:
    lie_trotter  an attention substep, then an MLP substep, each with its own mu, beta, LN_v   (2)
    euler        one substep: both oracles at the same point, gamma_a * Attn + gamma_m * MLP     (2)
    verlet       Strang: half attention step, MLP step, half attention step                     (3)
    imex         euler, then imex_iters fixed-point corrections with the MLP at the new point   (2 + k)
The paper states verlet and imex only by name and cost; the forms above are documented at SPLITTINGS.

mu = sigmoid(a), beta = sigmoid(b), gamma = softplus(c) are learned scalars: mu and beta one per
layer and substep, gamma one per oracle call. V_0 comes from its own token and position tables
(v0="embed") or is zero (v0="zero"); the head reads LN(X_L) through the tied unembedding and V_L
is dropped. untied_input=True gives X_0 a token table of its own (the parameter-matched GPT).

residual="gd", splitting="lie_trotter" is exactly nanoGPT's GPT: same parameter names, init and logits.
"""

import inspect
import math
import re
import time
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

RESIDUALS = ("gd", "polyak", "nesterov")
# substep name -> {oracle: share of the step} for the oracles called at that substep's point. gd
# multiplies each force by its share; the momentum variants start their learned gamma at share * gamma_init.
SPLITTINGS = {
    "lie_trotter": {"attn": {"attn": 1.0}, "mlp": {"mlp": 1.0}},
    "euler": {"euler": {"attn": 1.0, "mlp": 1.0}},
    # Strang splitting, kick-drift-kick: half an attention step, a full MLP step, half an attention
    # step; 3 oracle calls per layer (the attention weights are shared by both halves)
    "verlet": {"attn1": {"attn": 0.5}, "mlp": {"mlp": 1.0}, "attn2": {"attn": 0.5}},
    # implicit-explicit: attention explicit, the MLP implicit. An Euler predictor, then imex_iters
    # fixed-point corrections that re-evaluate the MLP at the new point; 2 + imex_iters calls per layer
    "imex": {"imex": {"attn": 1.0, "mlp": 1.0}},
}
V0S = ("embed", "wte", "zero")


class ChunkedHeadLoss(torch.autograd.Function):
    """Mean cross-entropy of the head, logits = x @ weight.T, against targets (-1: ignored), made
    chunk by chunk in one reused buffer, with the gradients computed on the way (softmax - onehot).
    On CPU, the plain path allocates about four (tokens x vocab) tensors per step (400 MB each at
    2048 tokens and GPT-2's vocabulary) which glibc unmaps when freed, so each step page-faults them
    in again; this path removes that and most of the memory, measured at -25-30% head time."""
    CHUNK = 256  # tokens per chunk: 256 x 50304 floats = 51 MB, reused

    @staticmethod
    def forward(ctx, x, weight, targets, need_grad):
        shape = x.shape
        x, targets = x.reshape(-1, shape[-1]), targets.reshape(-1)
        valid = (targets != -1).to(x.dtype)
        count = valid.sum().clamp(min=1)
        loss = x.new_zeros(())
        grad_x = torch.empty_like(x) if need_grad else None
        grad_w = torch.zeros_like(weight) if need_grad else None
        buffer = x.new_empty(min(ChunkedHeadLoss.CHUNK, x.size(0)), weight.size(0))
        for start in range(0, x.size(0), ChunkedHeadLoss.CHUNK):
            xs, ts, vs = x[start:start + buffer.size(0)], targets[start:start + buffer.size(0)], valid[start:start + buffer.size(0)]
            ts = ts.clamp(min=0)[:, None]
            p = buffer[:xs.size(0)]
            torch.mm(xs, weight.t(), out=p)                                  # logits z
            top = p.amax(dim=1, keepdim=True)
            target_logit = p.gather(1, ts)
            p.sub_(top).exp_()
            total = p.sum(dim=1, keepdim=True)
            loss += ((total.log() + top - target_logit).squeeze(1) * vs).sum()  # logsumexp(z) - z_target
            if need_grad:
                p.div_(total).scatter_add_(1, ts, torch.full_like(target_logit, -1.0)).mul_(vs[:, None])  # d loss / d z
                torch.mm(p, weight, out=grad_x[start:start + xs.size(0)])
                grad_w.addmm_(p.t(), xs)
        ctx.shape = shape
        ctx.save_for_backward(grad_x, grad_w, count)
        return loss / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, count = ctx.saved_tensors
        scale = grad_loss / count
        return (grad_x * scale).view(ctx.shape), grad_w * scale, None, None


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1; kept for nanoGPT parity)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        # a Python bool, not T > 1 (symbolic under torch.compile(dynamic=True)); `in`, as torch 2.11 cannot trace bool(dict)
        cached = cache is not None and "k" in cache
        if cache is not None:
            # generation: earlier positions' keys and values are reused. Only this attention's input
            # depends on other tokens; the X and V streams are per token, so this is all we keep.
            if cached:
                assert T == 1, "after the prompt, the cache takes one token at a time"
                k, v = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)
            cache["k"], cache["v"] = k.contiguous(), v.contiguous()  # the same strides at every step: no recompiles
        # flash attention on CUDA, a fused kernel on CPU; a single query attends to everything cached
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0,
                                           is_causal=not cached)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for efficiency
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms, like GPT-2; the paper uses False
    # the residual template (module docstring)
    residual: str = "gd"  # "gd" | "polyak" | "nesterov"
    splitting: str = "lie_trotter"  # "lie_trotter" | "euler" | "verlet" | "imex" (see SPLITTINGS)
    imex_iters: int = 1  # fixed-point corrections of splitting="imex" (the paper's k = 1, 2)
    velocity_norm: bool = True  # LN_v after every velocity update; without it the stream diverges (IC, MS)
    v0: str = "embed"  # "embed": V_0 from its own token + position tables; "wte": the tied token table + its own
    # position table; "zero": V_0 = 0
    # X_0 from a token table of its own (transformer.xte) instead of the tied head's wte, which then serves the
    # head alone: GPT with untied input and output embeddings, at V_0's cost (a table lookup, no matmul FLOPs).
    # It gives GPT YuriiFormer's parameter count up to V_0's position table, LN_v and the scalars (-0.13% on
    # config/repro_owt.py, -0.5% at the paper's width): the parameter-matched GPT of bench/reproduce.py.
    # False is nanoGPT's GPT exactly (same names, init, logits; nanoGPT checkpoints load).
    untied_input: bool = False
    # LN_v's gain at init: the velocity's RMS after an update. The paper's LayerNorm starts it at 1, 35x X_0's RMS
    # (0.02 * sqrt(2)): V then swamps X and every layer after the first is close to the identity at init. 0.03,
    # about X_0's RMS, starts the velocity on X's scale; it removed YuriiFormer's early lag behind GPT on GPT-2 BPE
    # text (README, "No early lag"). 1.0 is the paper's, which config/*_base.py name explicitly.
    velocity_gain_init: float = 0.03
    # Initial mu, beta, gamma (the values, not the raw parameters). The paper leaves them open; the
    # reproduction that matched it within 0.002 nats (IC) used raw parameters 0, i.e. these values.
    mu_init: float = 0.5
    beta_init: float = 0.5
    gamma_init: float = math.log(2)

    def __post_init__(self):
        for f in fields(self):  # a config.json or checkpoint is data from anywhere: "12" is not 12
            value = getattr(self, f.name)
            if type(value) is not type(f.default) and not (type(f.default) is float and type(value) is int):
                raise ValueError(f"{f.name}={value!r} must be a {type(f.default).__name__}.")
        for key in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be at least 1.")
        choices = {"residual": RESIDUALS, "splitting": tuple(SPLITTINGS), "v0": V0S}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r} is not known; choose one of {', '.join(allowed)}.")
        if self.imex_iters < 1:
            raise ValueError(f"imex_iters={self.imex_iters} must be at least 1.")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")
        if not (0 < self.mu_init < 1 and 0 < self.beta_init < 1 and self.gamma_init > 0):
            raise ValueError("mu_init and beta_init must lie strictly between 0 and 1, and gamma_init must be > 0 "
                             "(they pass through sigmoid and softplus).")


def _logit(p):
    return math.log(p / (1 - p))


def _inverse_softplus(y):
    return math.log(math.expm1(y))


def _dot(a, b):
    """<a, b> over all elements, in one pass and without an a * b temporary when the dtypes agree."""
    return torch.dot(a.reshape(-1), b.reshape(-1)) if a.dtype == b.dtype else (a * b.to(a.dtype)).sum()


class Lookahead(torch.autograd.Function):
    """Xin = X + mu V in one pass. Autograd would keep mu * V and make three passes backward; here
    dV = mu dXin and dmu = <dXin, V> are one pass each (checked against autograd in float64)."""

    @staticmethod
    def forward(ctx, x, mu, v):
        ctx.save_for_backward(mu, v)
        return torch.addcmul(x, mu, v)

    @staticmethod
    def backward(ctx, grad):
        mu, v = ctx.saved_tensors
        return grad, _dot(grad, v), grad * mu


class Momentum(torch.autograd.Function):
    """V+ = LN_v(U), U = beta V + gamma F (+ gamma2 F2 when a substep calls both oracles), in one function
    (weight None: no LN_v, V+ = U). U is written into one buffer and not kept: backward recomputes it from V
    and the F, which it keeps anyway for the scalars' gradients, so a momentum substep holds one tensor fewer
    than autograd would. Backward: LN_v's own kernel, then dV = beta dU, dF = gamma dU and the scalars'
    gradients as dot products, dbeta = <dU, V>, dgamma = <dU, F>: one pass each (checked against autograd in
    float64). The arguments are spelled out (no *args, no None saved): torch.compile traces it so, also under no_grad."""

    @staticmethod
    def forward(ctx, v, beta, weight, bias, gamma, force, gamma2=None, force2=None):
        pairs = [(gamma, force)] + ([(gamma2, force2)] if force2 is not None else [])
        u = Momentum.momentum(v, beta, pairs)
        ln_v = [t for t in (weight, bias) if t is not None]
        if weight is not None:
            u, *stats = torch.native_layer_norm(u, (u.size(-1),), weight, bias, 1e-5)
            ln_v += stats
        ctx.save_for_backward(v, beta, *ln_v, *(t for pair in pairs for t in pair))
        ctx.layout = (weight is not None, bias is not None)
        return u

    @staticmethod
    def momentum(v, beta, pairs):
        u = v * beta
        for gamma, force in pairs:
            u.addcmul_(gamma, force)
        return u

    @staticmethod
    def backward(ctx, grad):
        has_weight, has_bias = ctx.layout
        saved = ctx.saved_tensors  # indexed, not popped: torch 2.11's Dynamo cannot trace tuple methods here
        v, beta = saved[0], saved[1]
        n_ln = (3 + has_bias) if has_weight else 0  # weight, (bias), mean, rstd
        ln_v, rest = saved[2:2 + n_ln], saved[2 + n_ln:]
        pairs = list(zip(rest[::2], rest[1::2]))
        grad_weight = grad_bias = None
        if has_weight:
            weight, bias, stats = ln_v[0], (ln_v[1] if has_bias else None), ln_v[-2:]
            u = Momentum.momentum(v, beta, pairs)
            grad, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward(
                grad, u, [u.size(-1)], *stats, weight, bias, [True, True, has_bias])
        grads = [grad * beta, _dot(grad, v), grad_weight, grad_bias]
        for gamma, force in pairs:
            grads += [_dot(grad, force), grad * gamma]
        return tuple(grads) + (None, None) * (2 - len(pairs))


class Substep(nn.Module):
    """How one substep turns its oracle forces F_o into the next X (and V), and its learned scalars.
    gd:       X+ = X + sum_o share_o F_o                             (no parameters: nanoGPT's names stay)
    momentum: V+ = LN_v(beta V + sum_o gamma_o F_o);  X+ = X + V+
    with mu = sigmoid(a) (nesterov's lookahead; the caller forms Xin = X + mu V), beta = sigmoid(b) and one
    gamma_o = softplus(c_o) per oracle the substep calls."""

    def __init__(self, config, shares):
        super().__init__()
        self.shares = shares  # {oracle: share of the step}: gd's coefficients, the start of momentum's gammas
        self.momentum = config.residual != "gd"
        if not self.momentum:
            return
        self.mu = nn.Parameter(torch.tensor(_logit(config.mu_init))) if config.residual == "nesterov" else None
        self.beta = nn.Parameter(torch.tensor(_logit(config.beta_init)))
        self.gamma = nn.ParameterDict({o: nn.Parameter(torch.tensor(_inverse_softplus(share * config.gamma_init)))
                                       for o, share in shares.items()})
        self.ln_v = LayerNorm(config.n_embd, bias=config.bias) if config.velocity_norm else None
        if self.ln_v is not None:
            nn.init.constant_(self.ln_v.weight, config.velocity_gain_init)

    def scalar_parameters(self):
        """The raw a, b, c: their own optimizer group (no weight decay, a larger learning rate)."""
        return [p for p in (self.mu, self.beta, *self.gamma.values()) if p is not None] if self.momentum else []

    def scalars(self):
        """(mu, beta, {oracle: gamma}) as values, once per forward; mu is None without lookahead. gd: the shares."""
        if not self.momentum:
            return None, None, self.shares
        mu = torch.sigmoid(self.mu) if self.mu is not None else None
        return mu, torch.sigmoid(self.beta), {o: F.softplus(c) for o, c in self.gamma.items()}

    def forward(self, x, v, force, beta, gamma):
        if not self.momentum:
            for o, share in gamma.items():
                x = torch.add(x, force[o], alpha=share)  # alpha=1.0 adds exactly, as nanoGPT's x + F
            return x, None
        ln_v = (self.ln_v.weight, self.ln_v.bias) if self.ln_v is not None else (None, None)
        v = Momentum.apply(v, beta, *ln_v, *(t for o in force for t in (gamma[o], force[o])))  # LN_v(beta V + gamma F)
        return x + v, v


class Block(nn.Module):
    """One layer: one step of the configured optimiser, calling attention and MLP as the splitting says."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.substeps = nn.ModuleDict({step: Substep(config, shares)
                                       for step, shares in SPLITTINGS[config.splitting].items()})
        self.corrections = config.imex_iters if config.splitting == "imex" else 0

    def oracle(self, name, x, cache=None):
        return self.attn(self.ln_1(x), cache) if name == "attn" else self.mlp(self.ln_2(x))

    def forward(self, x, v, kv_cache=None):
        for step, substep in self.substeps.items():
            cache = None if kv_cache is None else kv_cache.setdefault(step, {})  # one per attention call
            mu, beta, gamma = substep.scalars()
            lookahead = x if mu is None else Lookahead.apply(x, mu, v)              # Xin = X + mu V (gd, polyak: X)
            force = {o: self.oracle(o, lookahead, cache) for o in substep.shares}   # F = Oracle(LN(Xin))
            x_next, v_next = substep(x, v, force, beta, gamma)                      # V+ = LN_v(beta V + gamma F); X+ = X + V+
            for _ in range(self.corrections):                                       # IMEX: the MLP force again, at X+
                force["mlp"] = self.oracle("mlp", x_next)
                x_next, v_next = substep(x, v, force, beta, gamma)
            x, v = x_next, v_next
        return x, v

    @property
    def oracle_calls(self):
        return sum(len(s.shares) for s in self.substeps.values()) + self.corrections


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        if config.residual != "gd" and config.v0 == "embed":
            # V_0's own tables (paper, App. A.1): about 40M extra parameters at 124M scale, ~0 FLOPs
            self.transformer.vte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.residual != "gd" and config.v0 in ("embed", "wte"):
            self.transformer.vpe = nn.Embedding(config.block_size, config.n_embd)
        if config.untied_input:
            self.transformer.xte = nn.Embedding(config.vocab_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied unembedding

        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

        print(f"number of parameters: {self.get_num_params(False) / 1e6:.2f}M, "
              f"{self.get_num_params() / 1e6:.2f}M without position tables and input-only token tables")

    def get_num_params(self, non_embedding=True):
        """Parameter count. With non_embedding, position tables and the token tables that only feed X_0 or V_0
        are left out (they cost no matmul FLOPs); wte stays in because it is also the output head."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
            for name in ("xte", "vte", "vpe"):
                if name in self.transformer:
                    n_params -= self.transformer[name].weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def features(self, idx, kv_cache=None):
        """LN(X_L) at every position of idx (b, t): what the tied head reads. A kv_cache (from new_kv_cache, for
        generation) continues at the position it holds."""
        device = idx.device
        b, t = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        if start + t > self.config.block_size:
            raise ValueError(f"Cannot forward a sequence of length {start + t}: block_size is only {self.config.block_size}.")
        pos = torch.arange(start, start + t, dtype=torch.long, device=device)

        tokens = self.transformer.xte if self.config.untied_input else self.transformer.wte
        x = self.transformer.drop(tokens(idx) + self.transformer.wpe(pos))
        v = None  # gd has no velocity stream
        if self.config.residual != "gd":
            if self.config.v0 == "zero":
                v = torch.zeros_like(x)
            else:
                table = self.transformer.vte if self.config.v0 == "embed" else self.transformer.wte
                v = self.transformer.drop(table(idx) + self.transformer.vpe(pos))
        for i, block in enumerate(self.transformer.h):
            x, v = block(x, v, None if kv_cache is None else kv_cache.layers[i])
        if kv_cache is not None:
            kv_cache.length += t
        return self.transformer.ln_f(x)  # the head reads LN(X_L); V_L is dropped

    def forward(self, idx, targets=None, kv_cache=None, return_logits=True):
        """Logits and loss. With targets, every position's logits; without, the last position's (generation).
        With targets and return_logits=False (training and evaluation loops) logits come back as None, and on
        CPU the loss goes through chunked_head_loss, which never holds all the logits."""
        x = self.features(idx, kv_cache)
        if targets is not None and not return_logits and x.device.type == 'cpu':
            return None, ChunkedHeadLoss.apply(x, self.lm_head.weight, targets, torch.is_grad_enabled())
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            logits = logits if return_logits else None
        else:
            # inference: only the last position's logits are needed
            logits = self.lm_head(x[:, [-1], :])
            loss = None
        return logits, loss

    def momentum_scalars(self):
        """The learned mu, beta, gamma of every layer as floats, e.g. {"layer0.attn.mu": 0.5,
        "layer0.euler.mlp.gamma": 0.69}; empty for gd."""
        out = {}
        for i, block in enumerate(self.transformer.h):
            for step, substep in block.substeps.items():
                if not substep.momentum:
                    continue
                mu, beta, gammas = substep.scalars()
                if mu is not None:
                    out[f"layer{i}.{step}.mu"] = mu.item()
                out[f"layer{i}.{step}.beta"] = beta.item()
                for oracle, gamma in gammas.items():
                    out[f"layer{i}.{step}{'.' + oracle if len(gammas) > 1 else ''}.gamma"] = gamma.item()
        return out

    def crop_block_size(self, block_size):
        """Shrink the context (e.g. to fine-tune GPT-2 at a smaller block_size)."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        for name in ("wpe", "vpe"):
            if name in self.transformer:
                self.transformer[name].weight = nn.Parameter(self.transformer[name].weight[:block_size])

    @classmethod
    def from_pretrained(cls, name, override_args=None):
        """A model from Hugging Face format: OpenAI's GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') or any
        folder written by `convert.py --to=hf`, a path or a Hub id (Hub ids need the network). convert.py does
        the reading; override_args may set dropout."""
        from convert import load_hf
        assert all(k == 'dropout' for k in override_args or {})
        print(f"loading weights from {name}")
        return load_hf(name, override_args)

    @classmethod
    def from_checkpoint(cls, checkpoint):
        """A model from a checkpoint dict whose weights carry this version's names (checkpoints.py maps older and
        nanoGPT's to them); model_args without our keys (nanoGPT's) default to plain GPT."""
        known = {f.name for f in fields(GPTConfig)}
        config = GPTConfig(**{k: v for k, v in checkpoint['model_args'].items() if k in known})
        state_dict = checkpoint['model']
        not_float = [k for k, v in state_dict.items() if not (isinstance(v, torch.Tensor) and v.is_floating_point())]
        if not_float:
            v = state_dict[not_float[0]]
            raise ValueError(f"its weights must be floating-point tensors, but {not_float[0]} is "
                             f"{v.dtype if isinstance(v, torch.Tensor) else type(v).__name__}")
        # the sizes that set the model's memory, against the weights' shapes, before the model is built: a config
        # that says 10^6 layers or a width of 10^6 is refused here, not by an out-of-memory error
        sizes = {'transformer.wte.weight': (config.vocab_size, config.n_embd),
                 'transformer.wpe.weight': (config.block_size, config.n_embd)}
        for name, shape in sizes.items():
            if name not in state_dict or tuple(state_dict[name].shape) != shape:
                raise ValueError(f"its weights do not fit its model_args: {name} should be {shape} for vocab_size="
                                 f"{config.vocab_size}, block_size={config.block_size}, n_embd={config.n_embd}, but is "
                                 f"{tuple(state_dict[name].shape) if name in state_dict else 'missing'}")
        layers = {int(m[1]) for k in state_dict if (m := re.match(r'transformer\.h\.(\d+)\.', k))}
        if layers != set(range(config.n_layer)):
            raise ValueError(f"its weights do not fit its model_args: n_layer={config.n_layer}, but the weights hold "
                             f"{len(layers)} layers")
        model = cls(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state_dict.items()}
        if found != expected:  # say what differs, not load_state_dict's page of key names
            differ = [k for k in expected if k in found and found[k] != expected[k]]
            raise ValueError(f"its weights do not fit its model_args ({len(set(expected) - set(found))} missing, "
                             f"{len(set(found) - set(expected))} unexpected, {len(differ)} of another shape, e.g. "
                             f"{next(iter(sorted(set(expected) ^ set(found)) + differ))})")
        upcast = sorted({str(v.dtype) for v in state_dict.values() if v.dtype != torch.float32})
        if upcast:
            print(f"note: the weights are {', '.join(upcast)}; they are converted to float32")
        model.load_state_dict(state_dict)
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, scalar_lr_scale=5.0,
                             optimizer="adamw", muon_lr=0.02):
        """AdamW with the paper's groups: matrices and embeddings decayed; biases and norm gains not;
        the mu/beta/gamma scalars not decayed and at scalar_lr_scale x the base LR. Each group's
        "lr_scale" tells the trainer how to scale the scheduled LR.
        optimizer="muon" (the paper's recipe) returns a list [Muon, AdamW] instead: Muon (momentum 0.95,
        Nesterov, no weight decay) at muon_lr for the 2-D matrices inside the blocks, AdamW as above for
        the rest (embeddings and head, norms, scalars)."""
        if optimizer not in ("adamw", "muon"):
            raise ValueError(f"optimizer={optimizer!r} is not known; choose one of adamw, muon.")
        params = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        muon = {}
        if optimizer == "muon":
            muon = {n: p for n, p in params.items() if n.startswith("transformer.h.") and p.dim() == 2}
            params = {n: p for n, p in params.items() if n not in muon}
        scalar_ids = {id(p) for m in self.modules() if isinstance(m, Substep) for p in m.scalar_parameters()}
        scalar = [p for p in params.values() if id(p) in scalar_ids]
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2 and id(p) not in scalar_ids]
        optim_groups = [
            {'params': decay, 'weight_decay': weight_decay, 'lr_scale': 1.0},
            {'params': no_decay, 'weight_decay': 0.0, 'lr_scale': 1.0},
            {'params': scalar, 'weight_decay': 0.0, 'lr_scale': scalar_lr_scale},
        ]
        print(f"num decayed parameter tensors: {len(decay)}, with {sum(p.numel() for p in decay):,} parameters")
        print(f"num non-decayed parameter tensors: {len(no_decay)}, with {sum(p.numel() for p in no_decay):,} parameters")
        print(f"num mu/beta/gamma scalars: {len(scalar)}, at {scalar_lr_scale}x the learning rate")
        # the fused kernel: one pass over each tensor, no per-step temporaries the size of the parameters;
        # on our 2-core CPU its step takes a quarter of foreach's time (29M parameters: 30 vs 117 ms)
        use_fused = device_type in ('cuda', 'cpu') and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        extra_args = dict(fused=True) if use_fused else dict()
        adamw = torch.optim.AdamW([g for g in optim_groups if g['params']], lr=learning_rate, betas=betas, **extra_args)
        if optimizer == "adamw":
            return adamw
        print(f"num Muon matrices: {len(muon)}, with {sum(p.numel() for p in muon.values()):,} parameters, "
              f"at lr {muon_lr}")
        # the trainer's schedule multiplies learning_rate by lr_scale: Muon's follows the same shape, peaking at muon_lr
        muon_group = {'params': list(muon.values()), 'lr_scale': muon_lr / learning_rate}
        return [torch.optim.Muon([muon_group], lr=muon_lr, momentum=0.95, nesterov=True, weight_decay=0.0), adamw]

    def flops_per_token(self):
        """Model FLOPs per token of a training step (forward + backward), as in the PaLM paper, Appendix B:
        6 per weight used plus the attention scores, counting each oracle call (Verlet and IMEX call
        an oracle more than once per layer with the same weights)."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        block = self.transformer.h[0]
        calls = [o for s in block.substeps.values() for o in s.shares] + ["mlp"] * block.corrections
        extra_weights = sum(p.numel() for o in calls for p in getattr(block, o).parameters()) \
            - sum(p.numel() for p in [*block.attn.parameters(), *block.mlp.parameters()])
        return 6 * (self.get_num_params() + L * extra_weights) + 12 * L * H * Q * T * calls.count("attn")

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops=312e12):
        """Model FLOPs utilisation against peak_flops (default: A100 bf16 peak)."""
        flops_per_iter = self.flops_per_token() * self.config.block_size * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops

    def new_kv_cache(self):
        return KVCache([{} for _ in self.transformer.h])

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_kv_cache=True):
        """Sample max_new_tokens tokens after the context idx (LongTensor of shape (b, t)). The
        model sees the last block_size tokens, with the KV cache or without."""
        cache = None
        for _ in range(max_new_tokens):
            if not use_kv_cache:
                logits, _ = self(idx[:, -self.config.block_size:])
            elif cache is None or cache.length == self.config.block_size:
                # (re)fill from the last block_size tokens: positions restart at 0, as without a cache
                cache = self.new_kv_cache()
                # a copy with the strides of a fresh tensor (as the prompt's), so torch.compile need not recompile
                logits, _ = self(idx[:, -self.config.block_size:].clone(memory_format=torch.contiguous_format),
                                 kv_cache=cache)
            else:
                logits, _ = self(idx[:, -1:], kv_cache=cache)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('Inf')
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


@dataclass
class KVCache:
    """Attention keys and values of each layer (a dict per attention call) and how many positions they hold."""
    layers: list
    length: int = 0


# Dense (no 2:4 sparsity) tensor-core peaks in FLOP/s from NVIDIA's spec sheets, by the dtype train.py computes in
# (float32 runs as TF32 on CUDA). Patterns are searched in order in torch.cuda.get_device_name(), so a specific
# part (H100 PCIe) comes before its family (H100), case aside. A GPU not listed (the A10G, say: it has no NVIDIA spec sheet)
# gets its peak measured.
GPU_PEAK_FLOPS = [
    (r'H100.*PCIe', dict(bfloat16=756e12, float16=756e12, float32=378e12)),
    (r'H[12]00.*NVL', dict(bfloat16=835e12, float16=835e12, float32=418e12)),
    (r'H100|H200|GH200', dict(bfloat16=989e12, float16=989e12, float32=495e12)),
    (r'A100', dict(bfloat16=312e12, float16=312e12, float32=156e12)),
    (r'L40S', dict(bfloat16=362e12, float16=362e12, float32=183e12)),
    (r'\bA40\b', dict(bfloat16=150e12, float16=150e12, float32=75e12)),
    (r'\bA10\b', dict(bfloat16=125e12, float16=125e12, float32=62.5e12)),
    (r'\bL4\b', dict(bfloat16=121e12, float16=121e12, float32=60e12)),
    (r'RTX 4090', dict(bfloat16=165e12, float16=165e12, float32=82.6e12)),  # with fp32 accumulation, as PyTorch
    (r'V100.*PCIe', dict(float16=112e12, float32=14e12)),
    (r'V100', dict(float16=125e12, float32=15.7e12)),
]


def table_peak_flops(device_name, dtype):
    """The dense peak of a GPU named device_name (torch.cuda.get_device_name) for dtype, or None if not listed."""
    for pattern, peaks in GPU_PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peaks.get(dtype)
    return None


def measure_peak_flops(device, dtype, max_n=None, repeats=5):
    """Best FLOP/s of square matmuls in dtype on device. n doubles from 256 while a product takes under 20 ms,
    up to max_n, so a dtype the device is slow at (float16 on most CPUs) costs a fraction of a second too."""
    on_cuda = str(device).startswith('cuda')
    max_n = max_n or (8192 if on_cuda else 1024)

    def seconds(a, b):
        if on_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    n = 256
    while True:
        gen = torch.Generator(device).manual_seed(0)  # not the global one: the model's init must not depend on this
        a, b = (torch.randn(n, n, device=device, dtype=getattr(torch, dtype), generator=gen) for _ in range(2))
        if seconds(a, b) > 0.02 or n >= max_n:  # also the warm-up at this size
            break
        n *= 2
    return max(2 * n ** 3 / seconds(a, b) for _ in range(repeats))


def device_peak_flops(device, dtype):
    """The MFU denominator for training in dtype on device, and where it comes from, in words: the spec-sheet
    table for a known GPU, else measured with large matmuls."""
    if str(device).startswith('cuda'):
        name = torch.cuda.get_device_name(device)
        peak = table_peak_flops(name, dtype)
        if peak:
            return peak, f"{name}'s dense {dtype} peak (spec sheet)"
    else:
        name = str(device)
    return measure_peak_flops(device, dtype), f"measured with {dtype} matmuls on {name}"
