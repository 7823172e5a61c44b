# Shipped by `attnedit export --format hf` with MLA students of Qwen3-MoE teachers whose
# config has norm_topk_prob: true (docs/EXPORT.md). The folder is a DeepSeek-V2 checkpoint
# (DeepseekV2ForCausalLM, scoring_func "softmax", topk_method "greedy", no shared experts);
# vLLM and SGLang renormalise the top-k routing weights when norm_topk_prob is true, but
# transformers' DeepseekV2TopkRouter never does. This class is transformers' DeepseekV2 with a
# router that does (Qwen3-MoE's routing: softmax over all experts, top k, divided by their sum,
# times routed_scaling_factor). Load with trust_remote_code=True.
import torch
import torch.nn.functional as F
from transformers.models.deepseek_v2.configuration_deepseek_v2 import DeepseekV2Config
from transformers.models.deepseek_v2.modeling_deepseek_v2 import (
    DeepseekV2ForCausalLM,
    DeepseekV2Moe,
    DeepseekV2TopkRouter,
)


class AttneditDeepseekV2TopkRouter(DeepseekV2TopkRouter):
    def forward(self, hidden_states):
        hidden_states = hidden_states.view(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32))
        scores = router_logits.softmax(dim=-1, dtype=torch.float32)
        if self.topk_method != "greedy" or (self.num_group or 1) != 1:
            raise ValueError("attnedit's DeepSeek-V2 router supports topk_method 'greedy' with one group")
        topk_weights, topk_indices = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        if self.norm_topk_prob:
            topk_weights = topk_weights / topk_weights.sum(dim=-1, keepdim=True)
        topk_weights = topk_weights * self.routed_scaling_factor
        return router_logits, topk_weights, topk_indices


class AttneditDeepseekV2ForCausalLM(DeepseekV2ForCausalLM):
    config_class = DeepseekV2Config

    def __init__(self, config):
        super().__init__(config)
        for layer in self.model.layers:
            if isinstance(layer.mlp, DeepseekV2Moe):
                layer.mlp.gate.__class__ = AttneditDeepseekV2TopkRouter  # same parameters
                layer.mlp.gate.norm_topk_prob = bool(config.norm_topk_prob)
