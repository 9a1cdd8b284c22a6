"""Run LLaDA-MoE's and LLaDA 2.x's own modeling code on tiny random models (for
tests/unit/families/test_moe_families.py; needs transformers 4.57 and the reference files, see there).

    python tests/unit/families/moe_reference.py llada_moe|llada2 OUT_DIR

Writes OUT_DIR/config.json and model.safetensors in the family's public layout, OUT_DIR/ref.pt
(ids and their logits) and, for LLaDA 2.x, OUT_DIR/ref_generate.pt (its `generate` at temperature 0
for three prompt lengths and three block/step/threshold settings).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY = {
    "llada_moe": dict(vocab_size=96, hidden_size=32, dense_intermediate_size=48, expert_intermediate_size=16,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, rope_theta=50000.0,
                      partial_rotary_factor=1.0, num_experts=8, num_experts_per_tok=3, qk_layernorm=True,
                      moe_layer_freq=[0, 1, 1], moe_router_enable_expert_bias=True,
                      moe_router_score_function="softmax", norm_topk_prob=False, shared_expert_intermediate_size=24,
                      eos_token_id=90, pad_token_id=90, mask_token_id=95, max_position_embeddings=256,
                      rms_norm_eps=1e-5),
    "llada2": dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, num_experts=16, num_shared_experts=1, num_experts_per_tok=3, n_group=4,
                   topk_group=2, moe_intermediate_size=16, first_k_dense_replace=1, use_bias=False,
                   use_qkv_bias=False, use_qk_norm=True, partial_rotary_factor=0.5, head_dim=8, rope_theta=600000.0,
                   routed_scaling_factor=2.5, pad_token_id=90, eos_token_id=90, mask_token_id=95,
                   max_position_embeddings=256, rms_norm_eps=1e-6, attention_dropout=0.0, embedding_dropout=0.0,
                   output_dropout=0.0),
}


HEAD_SCALE = {"llada_moe": 1.0, "llada2": 8.0}


def build(name: str):
    if name == "llada_moe":
        from moe.configuration_lladamoe import LLaDAMoEConfig as Config
        from moe.modeling_lladamoe import LLaDAMoEModelLM as Model
        arch, model_type, attention = "LLaDAMoEModelLM", "llada", "eager"
    else:
        from llada2.configuration_llada2_moe import LLaDA2MoeConfig as Config
        from llada2.modeling_llada2_moe import LLaDA2MoeModelLM as Model
        arch, model_type, attention = "LLaDA2MoeModelLM", "llada2_moe", "sdpa"
    config = Config(**TINY[name])
    config._attn_implementation = attention
    torch.manual_seed(0)
    model = Model(config).float().eval()
    with torch.no_grad():  # away from the initialisation (zero biases, unit norms)
        for n, b in model.named_buffers():
            if n.endswith("expert_bias"):
                b.copy_(torch.randn_like(b) * 0.05)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.lm_head.weight.mul_(HEAD_SCALE[name])  # confident enough that thresholds and edits take effect
    return model, {**TINY[name], "architectures": [arch], "model_type": model_type}


def reference_generate(model, out: Path, cfg: dict) -> None:
    inner = model.model.forward

    def forward_fp32_mask(*args, attention_mask=None, **kw):  # its generate builds the 0/-inf block
        if attention_mask is not None:                        # mask in bf16, which SDPA refuses beside
            attention_mask = attention_mask.float()           # fp32 queries
        return inner(*args, attention_mask=attention_mask, **kw)

    model.model.forward = forward_fp32_mask
    results = []
    g = torch.Generator().manual_seed(3)
    for length in (5, 8, 13):
        prompt = torch.randint(0, 90, (1, length), generator=g)
        for block, steps, threshold in ((8, 8, 0.95), (8, 4, 1.0), (4, 4, 0.2)):
            answer = model.generate(prompt, temperature=0.0, block_length=block, steps=steps, gen_length=16,
                                    threshold=threshold, eos_id=cfg["eos_token_id"], mask_id=cfg["mask_token_id"])
            results.append({"prompt": prompt, "block": block, "steps": steps, "threshold": threshold,
                            "answer": answer})
    torch.save(results, out / "ref_generate.pt")


def reference_editing(out: Path, cfg: dict) -> None:
    """LLaDA 2.1's generate (the same network, token editing) on the same weights."""
    from llada21.configuration_llada21_moe import LLaDA2MoeConfig
    from llada21.modeling_llada21_moe import LLaDA2MoeModelLM
    from safetensors.torch import load_file

    keep = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type")}
    config = LLaDA2MoeConfig(**keep)
    config._attn_implementation = "sdpa"
    model = LLaDA2MoeModelLM(config).float().eval()
    model.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    inner = model.model.forward

    def forward_fp32_mask(*args, attention_mask=None, **kw):
        if attention_mask is not None:
            attention_mask = attention_mask.float()
        return inner(*args, attention_mask=attention_mask, **kw)

    model.model.forward = forward_fp32_mask
    results = []
    g = torch.Generator().manual_seed(4)
    for length in (5, 8, 13):
        prompt = torch.randint(0, 90, (1, length), generator=g)
        for block, threshold, editing in ((8, 0.95, 0.9), (4, 0.3, 0.5), (8, 0.5, 0.2)):
            answer = model.generate(prompt, temperature=0.0, block_length=block, gen_length=16, threshold=threshold,
                                    editing_threshold=editing, max_post_steps=16, eos_id=cfg["eos_token_id"],
                                    mask_id=cfg["mask_token_id"])
            results.append({"prompt": prompt, "block": block, "threshold": threshold, "editing": editing,
                            "answer": answer})
    torch.save(results, out / "ref_editing.pt")


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    model, cfg = build(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg))
    ids = torch.randint(0, 90, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.save({"ids": ids, "logits": model(ids).logits}, out / "ref.pt")
        if name == "llada2":
            reference_generate(model, out, cfg)
            reference_editing(out, cfg)


if __name__ == "__main__":
    main()
