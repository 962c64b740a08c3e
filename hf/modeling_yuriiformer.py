"""
Transformers' view of a model.py GPT (any residual and splitting), for a folder written by convert.py:
    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)
convert.py copies this file and model.py into the folder; the network is model.py's own GPT, so the logits are
the training code's, not a re-implementation. generate() recomputes the whole context at every step (no cache
kept: the velocity stream makes a layer's input depend on more than keys and values); fine for the small models
this is for.
"""
from dataclasses import fields

import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .model import GPT, GPTConfig

GPT_FIELDS = [f.name for f in fields(GPTConfig)]


class YuriiFormerConfig(PretrainedConfig):
    """GPTConfig's fields as they are (model.py documents each), plus transformers' names for the usual sizes."""
    model_type = "yuriiformer"
    attribute_map = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                     "max_position_embeddings": "block_size"}

    def __init__(self, tie_word_embeddings=True, **kwargs):
        for name in GPT_FIELDS:
            setattr(self, name, kwargs.pop(name, getattr(GPTConfig, name)))
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class YuriiFormerForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = YuriiFormerConfig
    base_model_prefix = "model"
    _tied_weights_keys = {"model.lm_head.weight": "model.transformer.wte.weight"}  # the head is wte, as in GPT-2

    def __init__(self, config):
        super().__init__(config)
        self.model = GPT(GPTConfig(**{name: getattr(config, name) for name in GPT_FIELDS}))
        self.post_init()

    def _init_weights(self, module):
        pass  # GPT's own init ran in its constructor; from_pretrained then loads every weight

    def get_input_embeddings(self):
        return self.model.transformer.xte if self.config.untied_input else self.model.transformer.wte

    def get_output_embeddings(self):
        return self.model.lm_head

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        """Logits at every position; with labels, the mean next-token loss (labels are shifted here, -100 ignored)."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("this model has no padding mask: give it unpadded sequences (batch rows of one length, "
                             "or right padding whose positions you ignore, since the model is causal).")
        logits = self.model.lm_head(self.model.features(input_ids))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                     ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids[:, -self.config.block_size:]}  # the last block_size tokens, as model.generate
