# attnedit GateSWA student: Qwen3 attention with sliding windows (the standard Qwen3 fields
# use_sliding_window / sliding_window / layer_types), a sigmoid output gate and optional
# attention sinks on the replaced layers. Written by `attnedit export --format hf`.
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config


class AttneditGateSWAConfig(Qwen3Config):
    model_type = "attnedit_gateswa"
    # "elementwise": g_proj (num_attention_heads * head_dim, hidden_size); "head": one gate per
    # head, g_proj (num_attention_heads, hidden_size); "none": no gate.
    attn_output_gate: str = "elementwise"
    # A learned logit per head joining the softmax with no value (gpt-oss sinks).
    attn_sinks: bool = False
    # Layers whose attention is GateSWA; the others are plain Qwen3 attention. None: all.
    attention_replaced_layers: list[int] | None = None
