# attnedit GateSWA student on top of transformers' Qwen3 (written by `attnedit export`).
# A replaced layer computes, for x its normalised input (docs/TARGETS.md in attnedit):
#   a = softmax(q k^T * scaling + mask [, sink_h]) v      (sink: a logit with no value)
#   y = o_proj(a * sigmoid(g_proj(x)))                     (gate per element or per head)
# with Qwen3's q/k/v projections, q/k RMSNorm, RoPE and sliding-window masks unchanged.
import torch
from torch import nn
from transformers.models.qwen3 import modeling_qwen3 as qwen3

from .configuration_attnedit_gateswa import AttneditGateSWAConfig


def sink_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention whose softmax also holds the head's sink logit (gpt-oss)."""
    key = qwen3.repeat_kv(key, module.num_key_value_groups)
    value = qwen3.repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Tq, Tk)
    tq, tk = scores.shape[-2:]
    if attention_mask is None:  # plain causal, queries are the last tq positions
        i = torch.arange(tq, device=scores.device)[:, None] + (tk - tq)
        attention_mask = torch.arange(tk, device=scores.device)[None, :] <= i
    if attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :tk], float("-inf"))
    else:
        scores = scores + attention_mask[..., :tk]
    sinks = module.sinks.to(scores.dtype).reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
    probs = torch.softmax(torch.cat([scores, sinks], dim=-1).float(), dim=-1)[..., :-1]
    probs = nn.functional.dropout(probs, p=dropout, training=module.training).to(value.dtype)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


class AttneditGateSWAAttention(qwen3.Qwen3Attention):
    def __init__(self, config, layer_idx):
        super().__init__(config, layer_idx)
        self.gate = getattr(config, "attn_output_gate", "elementwise")
        heads = config.num_attention_heads
        if self.gate == "elementwise":
            self.g_proj = nn.Linear(config.hidden_size, heads * self.head_dim, bias=False)
        elif self.gate == "head":
            self.g_proj = nn.Linear(config.hidden_size, heads, bias=False)
        elif self.gate != "none":
            raise ValueError(f"attn_output_gate {self.gate!r}: expected elementwise, head or none")
        if getattr(config, "attn_sinks", False):
            self.sinks = nn.Parameter(torch.zeros(heads))

    def forward(self, hidden_states, position_embeddings, attention_mask, past_key_values=None,
                **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = qwen3.apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        if hasattr(self, "sinks"):
            attend = sink_attention
        else:
            attend = qwen3.ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, qwen3.eager_attention_forward)
        out, weights = attend(self, q, k, v, attention_mask,
                              dropout=0.0 if not self.training else self.attention_dropout,
                              scaling=self.scaling, sliding_window=self.sliding_window, **kwargs)
        out = out.reshape(*input_shape, -1, self.head_dim)  # (B, T, H, hd)
        if self.gate == "elementwise":
            out = out * torch.sigmoid(self.g_proj(hidden_states)).view(out.shape)
        elif self.gate == "head":
            out = out * torch.sigmoid(self.g_proj(hidden_states)).unsqueeze(-1)
        return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


class AttneditGateSWADecoderLayer(qwen3.Qwen3DecoderLayer):
    def __init__(self, config, layer_idx):
        super().__init__(config, layer_idx)
        replaced = getattr(config, "attention_replaced_layers", None)
        if replaced is None or layer_idx in replaced:
            self.self_attn = AttneditGateSWAAttention(config, layer_idx)


class AttneditGateSWAModel(qwen3.Qwen3Model):
    config_class = AttneditGateSWAConfig

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList(
            AttneditGateSWADecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.post_init()


class AttneditGateSWAForCausalLM(qwen3.Qwen3ForCausalLM):
    config_class = AttneditGateSWAConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = AttneditGateSWAModel(config)
        self.post_init()


__all__ = ["AttneditGateSWAForCausalLM", "AttneditGateSWAModel"]
