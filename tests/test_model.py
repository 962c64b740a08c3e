"""The update rules of model.py, checked against their equations, and the variants against each other."""
import math
import re

import pytest
import torch
from torch.nn import functional as F

from model import GPT, GPTConfig, RESIDUALS, SPLITTINGS

VARIANTS = [(r, s) for r in RESIDUALS for s in SPLITTINGS]  # every scheme, each with its KV cache
TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def make(residual="gd", splitting="lie_trotter", seed=0, **kw):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, "residual": residual, "splitting": splitting, **kw}))
    return model.eval()


def all_logits(model, idx):
    return model(idx, idx)[0]  # with targets the model returns logits at every position


def set_raw(model, scalar, value):
    """Set every substep's raw mu, beta or gamma parameters to value."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(rf"\.substeps\.\w+\.{scalar}\b", name):
                p.fill_(value)


def layer_norm(x, ln):
    return F.layer_norm(x, (x.size(-1),), ln.weight, ln.bias, 1e-5)


def attention(x, attn, n_head):
    B, T, C = x.shape
    q, k, v = F.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(C, dim=2)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-2, -1)) / math.sqrt(C // n_head)
    att = att.masked_fill(torch.ones(T, T).tril() == 0, float("-inf")).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    return F.linear(y, attn.c_proj.weight, attn.c_proj.bias)


def mlp(x, m):
    h = F.gelu(F.linear(x, m.c_fc.weight, m.c_fc.bias))
    return F.linear(h, m.c_proj.weight, m.c_proj.bias)


@pytest.mark.parametrize("residual,splitting", VARIANTS)
@pytest.mark.parametrize("v0", ["embed", "zero"])
def test_every_variant_is_causal(residual, splitting, v0):
    model = make(residual, splitting, v0=v0)
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    base = all_logits(model, idx)
    for t in (0, 5, 14):
        changed = idx.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 64
        out = all_logits(model, changed)
        assert torch.equal(out[:, :t + 1], base[:, :t + 1]), f"future tokens leak into position {t}"
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:]), "the model ignores its input"


@pytest.mark.parametrize("splitting", list(SPLITTINGS))
def test_nesterov_with_mu_zero_equals_polyak(splitting):
    polyak = make("polyak", splitting, seed=1)
    nesterov = make("nesterov", splitting, seed=2)
    missing, unexpected = nesterov.load_state_dict(polyak.state_dict(), strict=False)
    assert all(k.endswith(".mu") for k in missing) and missing and not unexpected
    idx = torch.randint(0, 64, (2, 16))
    assert not torch.allclose(all_logits(nesterov, idx), all_logits(polyak, idx))  # lookahead matters at mu = 0.5
    set_raw(nesterov, "mu", float("-inf"))  # mu = sigmoid(-inf) = 0
    torch.testing.assert_close(all_logits(nesterov, idx), all_logits(polyak, idx), rtol=0, atol=0)


@pytest.mark.parametrize("splitting", list(SPLITTINGS))
def test_polyak_without_memory_or_lnv_equals_gd(splitting):
    gd = make("gd", splitting, seed=1)
    polyak = make("polyak", splitting, seed=2, velocity_norm=False)
    missing, unexpected = polyak.load_state_dict(gd.state_dict(), strict=False)
    assert not unexpected and missing and all(re.search(r"\.(beta|gamma\.\w+)$|^transformer\.v[tp]e\.weight$", k)
                                              for k in missing)
    set_raw(polyak, "beta", float("-inf"))  # beta = 0: V_0 and past velocity are forgotten
    with torch.no_grad():                    # gamma = the share gd gives each call (1, or 1/2 for Strang's halves)
        for block in polyak.transformer.h:
            for substep in block.substeps.values():
                for oracle, share in substep.shares.items():
                    substep.gamma[oracle].fill_(math.log(math.expm1(share)))
    idx = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(all_logits(polyak, idx), all_logits(gd, idx), rtol=1e-5, atol=1e-5)


def test_gd_lie_trotter_is_nanogpt():
    model = make("gd", "lie_trotter")
    names = {n for n, _ in model.named_parameters()}
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"}
    for i in range(TINY["n_layer"]):
        for m in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            expected |= {f"transformer.h.{i}.{m}.weight", f"transformer.h.{i}.{m}.bias"}
    assert names == expected  # lm_head.weight is tied to wte, so named_parameters lists it once
    assert model.lm_head.weight is model.transformer.wte.weight

    # a plain nanoGPT forward written from the equations, reading the same weights
    idx = torch.randint(0, 64, (3, 16))
    tr = model.transformer
    x = tr.wte.weight[idx] + tr.wpe.weight[:16]
    for block in tr.h:
        x = x + attention(layer_norm(x, block.ln_1), block.attn, TINY["n_head"])
        x = x + mlp(layer_norm(x, block.ln_2), block.mlp)
    reference = layer_norm(x, tr.ln_f) @ tr.wte.weight.T
    torch.testing.assert_close(all_logits(model, idx), reference, rtol=1e-5, atol=1e-5)
    last, loss = model(idx)
    assert loss is None and last.shape == (3, 1, 64)
    torch.testing.assert_close(last[:, 0], reference[:, -1], rtol=1e-5, atol=1e-5)


def test_nanogpt_init_statistics():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=64, n_layer=4, n_head=4, n_embd=128))
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    proj = model.transformer.h[0].mlp.c_proj.weight
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05)
    assert torch.all(model.transformer.h[0].attn.c_attn.bias == 0)


def test_nesterov_lie_trotter_block_follows_the_equations():
    model = make("nesterov", "lie_trotter", seed=3)
    block = model.transformer.h[0]
    a, m = block.substeps["attn"], block.substeps["mlp"]
    with torch.no_grad():  # distinct scalars per substep, so a swapped name would show
        a.mu.fill_(0.3); a.beta.fill_(-0.7); a.gamma["attn"].fill_(1.1)
        m.mu.fill_(-1.2); m.beta.fill_(0.4); m.gamma["mlp"].fill_(-0.5)
        for ln in (a.ln_v, m.ln_v):
            ln.weight.uniform_(0.5, 1.5); ln.bias.uniform_(-0.1, 0.1)
    x, v = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    sig, sp = torch.sigmoid, F.softplus
    # attention substep
    xin = x + sig(a.mu) * v
    v1 = layer_norm(sig(a.beta) * v + sp(a.gamma["attn"]) * attention(layer_norm(xin, block.ln_1), block.attn, 2), a.ln_v)
    x1 = x + v1
    # MLP substep, looking ahead with the fresh velocity
    xin = x1 + sig(m.mu) * v1
    v2 = layer_norm(sig(m.beta) * v1 + sp(m.gamma["mlp"]) * mlp(layer_norm(xin, block.ln_2), block.mlp), m.ln_v)
    x2 = x1 + v2
    got_x, got_v = block(x, v)
    torch.testing.assert_close(got_x, x2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_v, v2, rtol=1e-5, atol=1e-5)


def test_nesterov_euler_block_follows_the_equations():
    model = make("nesterov", "euler", seed=4)
    block = model.transformer.h[1]
    e = block.substeps["euler"]
    with torch.no_grad():
        e.mu.fill_(0.8); e.beta.fill_(-0.3)
        e.gamma["attn"].fill_(0.2); e.gamma["mlp"].fill_(1.5)
    x, v = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    xin = x + torch.sigmoid(e.mu) * v
    force = (F.softplus(e.gamma["attn"]) * attention(layer_norm(xin, block.ln_1), block.attn, 2)
             + F.softplus(e.gamma["mlp"]) * mlp(layer_norm(xin, block.ln_2), block.mlp))
    v1 = layer_norm(torch.sigmoid(e.beta) * v + force, e.ln_v)
    got_x, got_v = block(x, v)
    torch.testing.assert_close(got_v, v1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_x, x + v1, rtol=1e-5, atol=1e-5)


def test_nesterov_verlet_block_follows_the_equations():
    model = make("nesterov", "verlet", seed=7)
    block = model.transformer.h[0]
    assert block.oracle_calls == 3
    scalars = model.momentum_scalars()  # Strang's half steps start at half the gamma
    assert scalars["layer0.attn1.gamma"] == pytest.approx(math.log(2) / 2)
    assert scalars["layer0.mlp.gamma"] == pytest.approx(math.log(2))
    with torch.no_grad():
        for i, p in enumerate(p for s in block.substeps.values() for p in s.scalar_parameters()):
            p.fill_(0.3 * i - 1)
    x0, v0 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    x, v = x0, v0
    sig, sp = torch.sigmoid, F.softplus
    for step in ("attn1", "mlp", "attn2"):  # kick (half attention), drift (MLP), kick (half attention)
        s = block.substeps[step]
        xin = x + sig(s.mu) * v
        force = mlp(layer_norm(xin, block.ln_2), block.mlp) if step == "mlp" else attention(layer_norm(xin, block.ln_1), block.attn, 2)
        v = layer_norm(sig(s.beta) * v + sp(s.gamma["mlp" if step == "mlp" else "attn"]) * force, s.ln_v)
        x = x + v
    got_x, got_v = block(x0, v0)
    torch.testing.assert_close(got_x, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_v, v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_imex_block_follows_the_equations(k):
    model = make("nesterov", "imex", seed=8, imex_iters=k)
    block = model.transformer.h[0]
    assert block.oracle_calls == 2 + k
    x, v = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    s = block.substeps["imex"]
    mu, beta = torch.sigmoid(s.mu), torch.sigmoid(s.beta)
    ga, gm = F.softplus(s.gamma["attn"]), F.softplus(s.gamma["mlp"])
    xin = x + mu * v
    explicit = ga * attention(layer_norm(xin, block.ln_1), block.attn, 2)  # attention once, at the lookahead
    v_next = layer_norm(beta * v + explicit + gm * mlp(layer_norm(xin, block.ln_2), block.mlp), s.ln_v)
    for _ in range(k):  # fixed point of V+ = LN_v(beta V + A + gamma_m MLP(LN(X + V+)))
        v_next = layer_norm(beta * v + explicit + gm * mlp(layer_norm(x + v_next, block.ln_2), block.mlp), s.ln_v)
    got_x, got_v = block(x, v)
    torch.testing.assert_close(got_v, v_next, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_x, x + v_next, rtol=1e-5, atol=1e-5)
    # gd form: X+ = X + A(X) + M(X+), by k corrections from the Euler guess
    gd_block = make("gd", "imex", seed=8, imex_iters=k).transformer.h[0]
    a = attention(layer_norm(x, gd_block.ln_1), gd_block.attn, 2)
    x_next = x + a + mlp(layer_norm(x, gd_block.ln_2), gd_block.mlp)
    for _ in range(k):
        x_next = x + a + mlp(layer_norm(x_next, gd_block.ln_2), gd_block.mlp)
    torch.testing.assert_close(gd_block(x, None)[0], x_next, rtol=1e-5, atol=1e-5)


def test_oracle_calls_and_flops_per_scheme():
    calls = {s: make("gd", s).transformer.h[0].oracle_calls for s in SPLITTINGS}
    assert calls == {"lie_trotter": 2, "euler": 2, "verlet": 3, "imex": 3}
    assert make("gd", "imex", imex_iters=2).transformer.h[0].oracle_calls == 4
    d, L, T = TINY["n_embd"], TINY["n_layer"], TINY["block_size"]
    attn_w, mlp_w = 4 * d * d + 4 * d, 8 * d * d + 5 * d  # weights and biases of one attention / one MLP call
    base = make("gd").flops_per_token()
    assert make("gd", "euler").flops_per_token() == base
    assert make("gd", "verlet").flops_per_token() - base == L * (6 * attn_w + 12 * d * T)
    assert make("gd", "imex", imex_iters=2).flops_per_token() - base == L * 6 * 2 * mlp_w


def test_gd_euler_is_a_parallel_block():
    model = make("gd", "euler", seed=5)
    block = model.transformer.h[0]
    x = torch.randn(2, 16, 32)
    expected = x + attention(layer_norm(x, block.ln_1), block.attn, 2) + mlp(layer_norm(x, block.ln_2), block.mlp)
    got_x, got_v = block(x, None)
    assert got_v is None
    torch.testing.assert_close(got_x, expected, rtol=1e-5, atol=1e-5)


def test_initial_velocity_and_scalar_defaults():
    embed, zero = make("nesterov", v0="embed"), make("nesterov", v0="zero")
    assert "vte" in embed.transformer and "vpe" in embed.transformer
    assert "vte" not in zero.transformer
    # defaults: raw parameters 0, i.e. mu = beta = 1/2 and gamma = ln 2
    scalars = embed.momentum_scalars()
    assert len(scalars) == TINY["n_layer"] * 6
    assert scalars["layer1.mlp.mu"] == pytest.approx(0.5) and scalars["layer0.attn.beta"] == pytest.approx(0.5)
    assert scalars["layer0.mlp.gamma"] == pytest.approx(math.log(2))
    raw = [p for block in embed.transformer.h for s in block.substeps.values() for p in s.scalar_parameters()]
    assert len(raw) == len(scalars) and all(p.item() == pytest.approx(0.0, abs=1e-7) for p in raw)
    custom = make("nesterov", mu_init=0.9, beta_init=0.2, gamma_init=1.0).momentum_scalars()
    assert custom["layer0.attn.mu"] == pytest.approx(0.9) and custom["layer0.attn.beta"] == pytest.approx(0.2)
    assert custom["layer0.attn.gamma"] == pytest.approx(1.0)
    assert make("gd").momentum_scalars() == {}
    assert "layer0.attn.mu" not in make("polyak").momentum_scalars()


def test_parameter_counts():
    gd, nesterov, zero = make("gd"), make("nesterov"), make("nesterov", v0="zero")
    d, V, T, L = TINY["n_embd"], TINY["vocab_size"], TINY["block_size"], TINY["n_layer"]
    extra_per_layer = 6 + 2 * 2 * d  # six scalars and two LN_v with weight and bias
    assert zero.get_num_params(False) - gd.get_num_params(False) == L * extra_per_layer
    assert nesterov.get_num_params(False) - zero.get_num_params(False) == (V + T) * d
    assert nesterov.get_num_params() == zero.get_num_params()  # V_0 tables are embeddings
    assert gd.get_num_params(False) - gd.get_num_params() == T * d
    assert nesterov.flops_per_token() - gd.flops_per_token() == 6 * L * extra_per_layer


def test_untied_input_matches_yuriiformers_parameters_at_gpts_flops():
    gd, matched, nesterov = make("gd"), make("gd", untied_input=True), make("nesterov")
    d, V, T = TINY["n_embd"], TINY["vocab_size"], TINY["block_size"]
    # one more token table, a lookup like V_0's: no more matmul FLOPs, nor non-embedding parameters
    assert matched.get_num_params(False) - gd.get_num_params(False) == V * d
    assert matched.get_num_params() == gd.get_num_params() and matched.flops_per_token() == gd.flops_per_token()
    # YuriiFormer's count but for V_0's position table, LN_v and the scalars
    assert nesterov.get_num_params(False) - matched.get_num_params(False) == T * d + TINY["n_layer"] * (6 + 4 * d)
    assert {n for n, _ in matched.named_parameters()} - {n for n, _ in gd.named_parameters()} == {"transformer.xte.weight"}
    # X_0 reads xte, the head reads wte (tied to lm_head), both trained
    tr = matched.transformer
    assert matched.lm_head.weight is tr.wte.weight and tr.xte.weight is not tr.wte.weight
    idx = torch.randint(0, V, (3, 16))
    x = tr.xte.weight[idx] + tr.wpe.weight[:16]
    for block in tr.h:
        x = x + attention(layer_norm(x, block.ln_1), block.attn, TINY["n_head"])
        x = x + mlp(layer_norm(x, block.ln_2), block.mlp)
    torch.testing.assert_close(all_logits(matched, idx), layer_norm(x, tr.ln_f) @ tr.wte.weight.T, rtol=1e-5, atol=1e-5)
    matched.train()(idx, idx)[1].backward()
    assert tr.xte.weight.grad.abs().sum() > 0 and tr.wte.weight.grad.abs().sum() > 0


def test_gradients_reach_scalars_and_v0_tables():
    model = make("nesterov").train()
    idx = torch.randint(0, 64, (2, 16))
    model(idx, idx)[1].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_optimizer_groups():
    model = make("nesterov")
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95), device_type="cpu")
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert len(group_of) == len(params) == sum(len(g["params"]) for g in opt.param_groups)
    for name, p in params.items():
        g = group_of[id(p)]
        if re.search(r"\.substeps\.\w+\.(mu|beta|gamma\.\w+)$", name):
            assert (g["lr_scale"], g["weight_decay"]) == (5.0, 0.0), name
        elif p.dim() >= 2:
            assert (g["lr_scale"], g["weight_decay"]) == (1.0, 0.1), name
        else:  # biases and norm gains
            assert (g["lr_scale"], g["weight_decay"]) == (1.0, 0.0), name


def test_bad_configs_are_rejected_clearly():
    with pytest.raises(ValueError, match="residual='adam' is not known; choose one of gd, polyak, nesterov"):
        GPTConfig(residual="adam")
    with pytest.raises(ValueError, match="splitting"):
        GPTConfig(splitting="strang")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        GPTConfig(mu_init=1.0)
    with pytest.raises(ValueError, match="block_size is only 16"):
        make()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("residual", RESIDUALS)
def test_generate_and_crop(residual):
    model = make(residual)
    out = model.generate(torch.zeros(2, 3, dtype=torch.long), max_new_tokens=20, top_k=5)
    assert out.shape == (2, 23) and out.max() < 64
    model.crop_block_size(8)
    assert model.transformer.wpe.weight.shape[0] == 8
    assert model(torch.zeros(1, 8, dtype=torch.long))[0].shape == (1, 1, 64)


def test_loss_at_init_is_near_uniform():
    for residual in RESIDUALS:
        idx = torch.randint(0, 64, (4, 16))
        loss = make(residual)(idx, idx)[1].item()
        assert abs(loss - math.log(64)) < 0.5, residual


@pytest.mark.parametrize("residual,splitting", VARIANTS)
def test_kv_cache_generation_matches_uncached(residual, splitting):
    model = make(residual, splitting, seed=6)
    prompt = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(2))
    # 30 new tokens run past block_size 16, so the cache is also refilled from a cropped window
    cached = model.generate(prompt, 30, top_k=1, use_kv_cache=True)
    uncached = model.generate(prompt, 30, top_k=1, use_kv_cache=False)
    assert torch.equal(cached, uncached)
    # the cached logits themselves agree with a full forward at every position
    cache = model.new_kv_cache()
    steps = [model(prompt, kv_cache=cache)[0]] + [model(cached[:, t:t + 1], kv_cache=cache)[0] for t in range(5, 16)]
    full = all_logits(model, cached[:, :16].contiguous())
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 4:16], rtol=1e-4, atol=1e-5)
    assert cache.length == 16
    with pytest.raises(ValueError, match="block_size is only 16"):
        model(cached[:, 16:17], kv_cache=cache)


def test_from_checkpoint_loads_ours_and_nanogpts():
    from checkpoints import model_from_checkpoint  # the names of earlier versions and nanoGPT's, mapped
    ours = make("nesterov", "lie_trotter", bias=True)  # has ln_v.attn.bias, a real weight
    from dataclasses import asdict
    loaded = model_from_checkpoint({"model_args": asdict(ours.config), "model": ours.state_dict()}).eval()
    idx = torch.randint(0, 64, (2, 16))
    assert torch.equal(all_logits(loaded, idx), all_logits(ours, idx))
    # ours from before the substep modules: h.0.attn_mu, h.0.euler_mlp_gamma, h.0.ln_v.attn.weight
    for splitting in ("lie_trotter", "euler"):
        ours = make("nesterov", splitting, seed=3)
        with torch.no_grad():
            for p in ours.parameters():
                p.add_(torch.rand_like(p))  # every scalar different, so a name mapped to another weight shows
        old = {}
        for k, v in ours.state_dict().items():
            m = re.fullmatch(r"(.*)substeps\.(\w+)\.(?:ln_v\.(\w+)|(mu|beta)|gamma\.(\w+))", k)
            if m and m[3]:
                k = f"{m[1]}ln_v.{m[2]}.{m[3]}"
            elif m:
                k = f"{m[1]}{m[2]}_{m[4]}" if m[4] else f"{m[1]}{m[2]}_{m[5] + '_' if splitting == 'euler' else ''}gamma"
            old[k] = v
        assert any(k.endswith("transformer.h.1.mlp_gamma") or k.endswith("euler_mlp_gamma") for k in old)
        loaded = model_from_checkpoint({"model_args": asdict(ours.config), "model": old}).eval()
        assert torch.equal(all_logits(loaded, idx), all_logits(ours, idx))
    # nanoGPT: model_args without our keys, compiled-model prefixes, the causal-mask buffer of old torch
    gd = make("gd")
    nano_args = {k: getattr(gd.config, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")}
    nano_sd = {"_orig_mod." + k: v for k, v in gd.state_dict().items()}
    nano_sd["_orig_mod.transformer.h.0.attn.bias"] = torch.ones(1, 1, 16, 16).tril()
    loaded = model_from_checkpoint({"model_args": nano_args, "model": nano_sd}).eval()
    assert loaded.config.residual == "gd"
    assert torch.equal(all_logits(loaded, idx), all_logits(gd, idx))


@pytest.mark.parametrize("residual", ["gd", "nesterov"])
def test_chunked_head_loss_matches_plain_loss_and_gradients(residual, monkeypatch):
    monkeypatch.setattr("model.ChunkedHeadLoss.CHUNK", 7)  # several chunks and a ragged last one
    model = make(residual).train()
    idx = torch.randint(0, 64, (3, 16))
    targets = torch.randint(0, 64, (3, 16))
    targets[0, :5] = -1  # ignored positions
    logits, plain = model(idx, targets)
    plain.backward(torch.tensor(0.5))  # a scaled loss, as under gradient accumulation
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    none, chunked = model(idx, targets, return_logits=False)
    chunked.backward(torch.tensor(0.5))
    assert none is None and logits.shape == (3, 16, 64)
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-5, atol=1e-7, msg=n)
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(model(idx, targets, return_logits=False)[1], plain, rtol=1e-6, atol=1e-6)


def test_fused_momentum_updates_match_autograd_in_float64():
    """Lookahead and Momentum's hand-written backward against autograd of the plain expressions."""
    from model import Lookahead, Momentum
    g = torch.Generator().manual_seed(0)
    x, v, f1, f2 = (torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    mu, beta, g1, g2 = (torch.rand((), generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    weight, bias = (torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    inputs = (x, v, f1, f2, mu, beta, g1, g2, weight, bias)

    def ln(u, b=bias):
        return F.layer_norm(u, (8,), weight, b, 1e-5)
    cases = [  # (fused, plain)
        (Lookahead.apply(x, mu, v), x + mu * v),
        (Momentum.apply(v, beta, None, None, g1, f1), beta * v + g1 * f1),                      # no LN_v
        (Momentum.apply(v, beta, weight, bias, g1, f1), ln(beta * v + g1 * f1)),
        (Momentum.apply(v, beta, weight, None, g1, f1, g2, f2), ln(beta * v + g1 * f1 + g2 * f2, None)),  # euler
    ]
    upstream = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    for got, want in cases:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        got_grads = torch.autograd.grad(got, inputs, upstream, allow_unused=True)
        want_grads = torch.autograd.grad(want, inputs, upstream, allow_unused=True)
        for a, b in zip(got_grads, want_grads):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda *t: Momentum.apply(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]),
                                    (v, beta, weight, bias, g1, f1, g2, f2))
    assert torch.autograd.gradcheck(Lookahead.apply, (x, mu, v))


def test_nesterov_under_bf16_autocast_and_torch_compile():
    """The fused updates under the CUDA paths' settings, on CPU: bf16 autocast (oracle outputs in bf16, the
    X and V streams in float32) and full-model torch.compile, both against the eager float32 model."""
    model = make("nesterov", "euler", seed=9, n_layer=1).train()  # euler: a Momentum update with two forces
    idx, targets = torch.randint(0, 64, (2, 2, 16), generator=torch.Generator().manual_seed(3))
    _, loss = model(idx, targets)
    loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, bf16_loss = model(idx, targets)
    bf16_loss.backward()
    assert abs(bf16_loss.item() - loss.item()) < 0.05
    for n, p in model.named_parameters():
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), n
    scalar_grad = model.transformer.h[0].substeps["euler"].gamma["mlp"].grad
    torch.testing.assert_close(scalar_grad, reference["transformer.h.0.substeps.euler.gamma.mlp"], rtol=0.1, atol=1e-3)

    model.zero_grad()
    _, compiled_loss = torch.compile(model)(idx, targets)
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[n], rtol=1e-4, atol=1e-6, msg=n)


def x0_share_of_xl(model, idx):
    """At the head's input X_L, the share of the token + position embedding X_0: |projection of X_L on X_0| / |X_L|.
    Token identity reaches the head through it (GPT) or only through V_0's own table (a velocity that swamps X)."""
    seen = {}
    model.transformer.h[0].register_forward_pre_hook(lambda m, args: seen.update(x0=args[0]))
    model.transformer.ln_f.register_forward_pre_hook(lambda m, args: seen.update(xl=args[0]))
    with torch.no_grad():
        model(idx)
    x0, xl = seen["x0"], seen["xl"]
    return ((xl * x0).sum() / (x0 * x0).sum() * x0).norm().item() / xl.norm().item()


def test_activation_scales_at_init():
    """The velocity starts on X's scale: with LN_v's gain at 1 (the paper's LayerNorm) the first normalised
    velocity has RMS 1 against X_0's 0.028, every later layer is nearly the identity, and X_0 is <1% of X_L
    (GPT: ~60%). That made YuriiFormer lag GPT for its first few hundred steps on GPT-2 BPE text; the default gain
    of 0.03 keeps X_0 >10% of X_L (README, "No early lag")."""
    idx = torch.randint(0, 50257, (4, 128), generator=torch.Generator().manual_seed(0))
    size = dict(vocab_size=50304, block_size=128, n_layer=4, n_head=4, n_embd=128, bias=False)  # config/repro_owt.py
    gd = x0_share_of_xl(make("gd", **size), idx)
    paper = x0_share_of_xl(make("nesterov", velocity_gain_init=1.0, **size), idx)
    default = x0_share_of_xl(make("nesterov", **size), idx)  # LN_v's gain starts at 0.03
    assert gd > 0.4 and paper < 0.02 and default > 0.1
