"""The LLaDA mask predictor: a LLaMA-shaped Transformer without a causal mask.

Pure single-device PyTorch. Module attribute names are the checkpoint key names of the public
LLaDA checkpoints (`transformer.wte`, `transformer.blocks.N.q_proj`, ...; the Hugging Face wrapper
in `llada.hf` adds the leading `model.`), so weights load by name with no renaming table.

    input_ids (B, L) ──wte──▶ x (B, L, D) ──[block] x n_layers──▶ ln_f ──ff_out──▶ logits (B, L, V)
    block: x = x + attn_out(Attention(attn_norm(x)))        # bidirectional, RoPE, GQA
           x = x + ff_out(act(ff_proj(ff_norm(x))) * up_proj(ff_norm(x)))   # SwiGLU

The model is not told the diffusion time t: the count of mask tokens in the input carries it.

For the caching samplers the forward also takes a `KVCache`, the one key/value cache: preallocated
keys/values of every position (rotary applied), into which the positions run are written in place
at `cache_position`, attention then reading the whole buffer. Nothing grows from step to step, so
a step has the same shapes (and addresses) each time: what CUDA graphs need. Order does not matter
to attention, so a prefix cache and a prefix+suffix ("dual") cache are the same mechanism. A model
spread over several devices keeps each layer's cache where its block runs by hooks of its own
(`llada.placement.follow_devices`), not here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from llada.config import ModelConfig
from llada.rope import apply_rope, rope_cos_sin

KV = tuple[Tensor, Tensor]  # (keys, values), each (B, H_kv, S, head_dim), rotary applied to keys


class KVCache:
    """Keys and values of `length` positions for every layer, allocated once: (B, H_kv, length,
    head_dim) each, written in place by `LLaDAModel.forward(..., kv_cache=, cache_position=)`.
    Positions not yet written hold zeros; the caller masks them (attention_mask) or a causal model
    never looks ahead to them."""

    def __init__(self, config: ModelConfig, batch: int, length: int, device: torch.device | str,
                 dtype: torch.dtype):
        shape = (batch, config.n_kv_heads, length, config.head_dim)
        self.layers: list[KV] = [(torch.zeros(shape, device=device, dtype=dtype),
                                  torch.zeros(shape, device=device, dtype=dtype)) for _ in range(config.n_layers)]
        self.batch, self.length = batch, length
        # (B, length, D) final hidden states, kept only by a model whose logits at position i come
        # from position i - 1 (`shifted_prediction`): a run starting at p > 0 reads p - 1's from here.
        self.hidden: Tensor | None = None


_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back before the weight, as the reference does."""

    def __init__(self, dim: int, eps: float, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x32 = x.float()
        x = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype)
        x = self.weight * x
        return x + self.bias if self.bias is not None else x


# Rotary position embedding (`rope_cos_sin`, `apply_rope`): llada/rope.py, with the frequencies' scaling.


# --------------------------------------------------------------------------------------------------
# Mixture of experts (LLaDA-MoE, LLaDA 2.x): the MLP of a block becomes a router and a set of SwiGLU
# experts, each token mixing the outputs of the k experts the router picks.


class Expert(nn.Module):
    """One SwiGLU MLP without biases: ff_out(act(ff_proj(x)) * up_proj(x)) (the dense MLP's names)."""

    def __init__(self, d: int, hidden: int, activation: str):
        super().__init__()
        self.ff_proj = nn.Linear(d, hidden, bias=False)  # gate
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.ff_out = nn.Linear(hidden, d, bias=False)  # down
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.ff_out(self.act(self.ff_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """The router's weight (num_experts, D) and, when the config has one, its per-expert bias
    (a buffer: set by load balancing during pretraining, not by gradients). Its forward gives the
    logits in float32 whatever the weight's dtype (as LLaDA 2.x's gate does); a module call, so
    that accelerate's offload hooks fetch the weight before it is read."""

    def __init__(self, d: int, num_experts: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, d))
        if bias:
            self.register_buffer("expert_bias", torch.zeros(num_experts))
        else:
            self.expert_bias = None

    def forward(self, x: Tensor) -> Tensor:
        """(N, D) -> router logits (N, num_experts) in float32."""
        return F.linear(x.float(), self.weight.float())


class MoE(nn.Module):
    """Router + `num_experts` experts (+ a shared expert), see `config.MoEConfig`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        m = config.moe
        self.moe = m
        self.router = Router(config.d_model, m.num_experts, bias=m.bias is not None)
        self.experts = nn.ModuleList(Expert(config.d_model, m.intermediate_size, config.activation_type)
                                     for _ in range(m.num_experts))
        self.shared = (Expert(config.d_model, m.shared_intermediate_size, config.activation_type)
                       if m.shared_intermediate_size else None)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """For tokens x (N, D): the experts chosen (N, k) and their mixing weights (N, k), float32.

        scores = softmax or sigmoid of the router logits (float32); the experts are the top k of
        scores (+ expert_bias), among the `topk_groups` groups whose two best scores sum highest
        when the experts are grouped; the weights are those scores (with the bias in "weights"
        mode), rescaled to sum to one when `norm_topk`, times `scaling`."""
        m = self.moe
        logits = self.router(x)  # (N, E) float32
        scores = logits.softmax(-1) if m.score == "softmax" else logits.sigmoid()
        bias = self.router.expert_bias
        ranked = scores if bias is None else scores + bias.float()
        if m.groups > 1:
            N = ranked.shape[0]
            best_two = ranked.view(N, m.groups, -1).topk(2, dim=-1).values.sum(-1)  # (N, groups)
            keep = torch.zeros_like(best_two, dtype=torch.bool).scatter_(
                1, best_two.topk(m.topk_groups, dim=-1).indices, True)
            ranked = ranked.masked_fill(~keep.repeat_interleave(m.num_experts // m.groups, dim=1), float("-inf"))
        chosen = ranked.topk(m.num_experts_per_tok, dim=-1).indices  # (N, k)
        weights = (ranked if m.bias == "weights" else scores).gather(1, chosen)
        if m.norm_topk and m.num_experts_per_tok > 1:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return chosen, weights * m.scaling

    @torch.compiler.disable  # the grouping by expert is data dependent: eager under a compiled block
    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D): each token's experts run on it, mixed by the router's weights in
        float32; tokens are grouped by expert so each expert runs once (one host sync per block,
        for the group sizes)."""
        B, T, D = x.shape
        flat = x.reshape(-1, D)
        chosen, weights = self.route(flat)
        if x.is_meta:  # shapes only (a full-size model on the meta device): the grouping is data dependent
            out = sum(expert(flat) for expert in self.experts) + (0 if self.shared is None else self.shared(flat))
            return out.view(B, T, D)
        k = chosen.shape[1]
        order = chosen.flatten().argsort()  # assignments grouped by expert
        counts = torch.bincount(chosen.flatten(), minlength=len(self.experts)).tolist()
        rows = order // k  # token of each assignment, in expert order
        out = torch.zeros(B * T, D, device=x.device, dtype=torch.float32)
        start = 0
        for expert, n in zip(self.experts, counts, strict=True):
            if n:
                idx = order[start:start + n]
                y = expert(flat[rows[start:start + n]]).float() * weights.flatten()[idx, None]
                out.index_add_(0, rows[start:start + n], y)
                start += n
        out = out.to(x.dtype)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.view(B, T, D)


# --------------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm block: bidirectional multi-head (grouped-query) attention, then the SwiGLU MLP."""

    def __init__(self, config: ModelConfig, index: int = 0):
        super().__init__()
        d, hd = config.d_model, config.head_dim
        qkv_bias = config.include_bias or config.include_qkv_bias
        self.config = config
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, config.rms_norm_eps, bias=config.include_bias)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(config.n_heads * hd, d, bias=config.include_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, config.rms_norm_eps)
            self.k_norm = RMSNorm(hd, config.rms_norm_eps)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps, bias=config.include_bias)
        if config.is_moe_layer(index):
            self.moe = MoE(config)
        else:
            self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)  # gate
            self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
            self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=config.include_bias)  # down
            self.moe = None
        self.act = _ACTIVATIONS[config.activation_type]

    def attention(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KV | None = None,
                  at: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Attention of the T positions of x (B, T, D) over their own keys, or, with a `cache`, over
        the whole cache once their keys and values are written into it at positions `at` (T,)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.config.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, hd), (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # write this step's positions into the static buffers, attend over all
            cache[0].index_copy_(2, at, k)  # `at`: the T positions, a tensor (a compiled block does not
            cache[1].index_copy_(2, at, v)  # specialise on the position as it would on an int)
            k, v = cache  # (B, Hkv, L, hd)
        dropout = self.config.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.attn_out(y)

    def mlp(self, x: Tensor) -> Tensor:
        if self.moe is not None:
            return self.moe(x)
        return self.ff_out(self.act(self.ff_proj(x)) * self.up_proj(x))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None,
                cache: KV | None = None, at: Tensor | None = None, is_causal: bool = False) -> Tensor:
        p = self.config.residual_dropout if self.training else 0.0
        x = x + F.dropout(self.attention(self.attn_norm(x), cos, sin, mask, cache, at, is_causal), p, self.training)
        return x + F.dropout(self.mlp(self.ff_norm(x)), p, self.training)


def _given_mask(attention_mask: Tensor, B: int, T: int, keys: int) -> Tensor:
    """`LLaDAModel.forward`'s attention_mask as a boolean SDPA mask: a padding mask (B, K) becomes
    (B, 1, 1, K); a 4-D mask (B or 1, 1, T, K) is taken as it is. Any other shape is a ValueError."""
    if attention_mask.dim() == 4:
        if attention_mask.shape[0] not in (1, B) or tuple(attention_mask.shape[1:]) != (1, T, keys):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected (batch or 1, 1, "
                             f"queries, keys) = ({B} or 1, 1, {T}, {keys})")
        if attention_mask.dtype != torch.bool:  # an additive float mask would read inverted
            raise ValueError(f"a 4-D attention_mask must be boolean (True: the query sees the key), got {attention_mask.dtype}")
        return attention_mask
    if attention_mask.shape != (B, keys):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; "
                         f"expected (batch, keys attended) = {(B, keys)}, or a 4-D (batch or 1, 1, queries, keys)")
    return attention_mask.bool()[:, None, None, :]


# Which logits a forward computes (`LLaDAModel.forward`'s output_positions): positions start:stop
# of every row (B, T', V), or N scattered positions given as (rows, columns) (N, V).
OutputPositions = slice | tuple[Tensor, Tensor]


class LLaDAModel(nn.Module):
    """Embedding, `n_layers` blocks, final norm and output head; forward returns logits.

    The output has `embedding_size` columns (>= vocab_size), as in the reference.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.embedding_size, config.d_model),
            "blocks": nn.ModuleList(Block(config, i) for i in range(config.n_layers)),
            "ln_f": RMSNorm(config.d_model, config.rms_norm_eps, bias=config.include_bias),
        })
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(config.d_model, config.embedding_size,
                                                   bias=config.include_bias)
        if config.learned_positions:
            self.transformer["wpe"] = nn.Embedding(config.max_sequence_length, config.d_model)
        # Set by llada.runtime.apply_activation_checkpointing; recomputes each block in backward.
        self.activation_checkpointing = False
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights, with the residual output projections scaled by depth."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                residual = ".blocks." in name and name.endswith(("attn_out", "ff_out"))
                scale = 1 / math.sqrt(2 * self.config.n_layers) if residual else 1.0
                nn.init.normal_(module.weight, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, Router):
                nn.init.normal_(module.weight, std=std)
                if module.expert_bias is not None:
                    module.expert_bias.zero_()

    # ----------------------------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                *, output_positions: OutputPositions | None = None, kv_cache: KVCache | None = None,
                cache_position: int = 0, block_size: int | None = None) -> Tensor:
        """Logits (B, T, embedding_size) for `input_ids` (B, T), or those of `output_positions`.

        attention_mask: (B, K), 1 for a real token and 0 for padding, over every key attended: the
            T run, or the whole `kv_cache` (K = its length); None when nothing is padded. Or a
            boolean (B or 1, 1, T, K): which keys each query sees, as transformers takes a 4-D mask
            (document masks, block diffusion's [x_t | x_0]); a causal model still never sees ahead.
        position_ids: (B, T) rotary positions of the tokens run; default 0..T-1, or
            cache_position.. with a kv_cache (left padding with a mask is fine: a constant shift
            of positions does not change RoPE attention).
        output_positions: which logits to compute, in one of the two forms of `OutputPositions`:
            a slice of the T positions, the same for every row (logits (B, T', V): what the samplers
            ask for), or a pair (rows, columns) of (N,) long tensors, e.g.
            `mask.nonzero(as_tuple=True)` (logits (N, V) of those positions in that order: a
            likelihood scores only its masked tokens, so memory grows with them, not with B * T;
            the pair costs no host synchronisation). None: every position. Anything else is a TypeError.
        kv_cache: a `KVCache` to write this call's keys/values into, at positions
            cache_position..cache_position+T, attending over all of it.
        block_size: block diffusion (LLaDA 2.x): a query at sequence position p sees the keys of its
            own block of `block_size` positions (counted from position 0 of the keys) and of every
            block before it, none after. None: every key (bidirectional).
        """
        if output_positions is not None and not isinstance(output_positions, (slice, tuple)):
            raise TypeError(f"output_positions must be a slice or a (rows, columns) pair of index tensors, got "
                            f"{type(output_positions).__name__}")
        B, T = input_ids.shape
        start, keys = (0, T) if kv_cache is None else (cache_position, kv_cache.length)
        if position_ids is None:
            if self.config.learned_positions:
                self._check_positions(start, start + T - 1)  # known on the host: no device sync
            position_ids = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        elif self.config.learned_positions and position_ids.numel():  # given positions: read them once
            self._check_positions(int(position_ids.min()), int(position_ids.max()))
        cos, sin = rope_cos_sin(position_ids, self.config.rotary_dim, self.config.rope_theta,
                                self.config.rope_scaling)  # (B, 1, T, rotary_dim)
        mask, is_causal = self._attention_mask(attention_mask, B, T, start, keys, input_ids.device, block_size)
        at = None if kv_cache is None else torch.arange(start, start + T, device=input_ids.device)  # cache positions
        x = self.embed(input_ids, position_ids)  # (B, T, D)
        for i, block in enumerate(self.transformer.blocks):
            cache = None if kv_cache is None else kv_cache.layers[i]
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, mask, cache, at, is_causal, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, cache, at, is_causal)
        x = self.select_outputs(x, output_positions, start, kv_cache)  # (B, T', D), or (N, D) for a pair
        return self.head(self.transformer.ln_f(x))

    def embed(self, input_ids: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """Token embeddings (B, T, D), scaled by sqrt(D) when `input_emb_norm`, plus the learned
        position embedding of `position_ids` (B, T) when `learned_positions`, with embedding dropout.

        Raises ValueError without position_ids when `learned_positions` (`forward` has checked that
        they are rows of the table, 0..max_sequence_length-1).
        """
        x = self.transformer.wte(input_ids)
        if self.config.input_emb_norm:
            x = x * self.config.d_model**0.5
        if self.config.learned_positions:
            if position_ids is None:
                raise ValueError("a model with learned_positions needs position_ids")
            x = x + self.transformer.wpe(position_ids)
        return F.dropout(x, self.config.embedding_dropout, self.training)

    def _check_positions(self, first: int, last: int) -> None:
        """ValueError unless positions first..last have rows in the learned position embedding."""
        limit = self.config.max_sequence_length
        if first < 0 or last >= limit:
            raise ValueError(f"positions {first}..{last} are outside the learned position embedding's 0..{limit - 1} "
                             f"(max_sequence_length {limit})")

    def head(self, x: Tensor) -> Tensor:
        """Logits (..., embedding_size) of final-normed states x (..., D): the output matrix, or the
        embedding's with `weight_tying`; times 1/sqrt(D) when `scale_logits`."""
        if self.config.weight_tying:  # the embedding is the head
            logits = F.linear(x, self.transformer.wte.weight)
        else:  # called as a module, so that a device_map's hooks place the head, or fetch it when offloaded
            logits = self.transformer.ff_out(x)
        return logits * (1 / math.sqrt(self.config.d_model)) if self.config.scale_logits else logits

    def _attention_mask(self, attention_mask: Tensor | None, B: int, T: int, start: int,
                        keys: int, device: torch.device, block_size: int | None = None) -> tuple[Tensor | None, bool]:
        """The SDPA mask (B|1, 1, T|1, keys) for queries at positions start..start+T-1, and whether
        SDPA's own causal flag does the job instead (no padding, no cache: the flash kernel)."""
        mask = None  # None: every query sees every key (the diffusion model without padding)
        if attention_mask is not None:
            mask = _given_mask(attention_mask, B, T, keys)  # (B|1, 1, 1|T, K): which keys are visible
        if block_size is not None:  # block diffusion: key block <= query block
            q_block = torch.arange(start, start + T, device=device) // block_size
            blocks = (torch.arange(keys, device=device) // block_size)[None, :] <= q_block[:, None]  # (T, K)
            mask = blocks if mask is None else mask & blocks
        if not self.config.causal:
            return mask, False
        if mask is None and start == 0 and keys == T:
            return None, True
        # the autoregressive baseline only: the query at position start + i sees keys up to it
        tri = torch.ones(T, keys, dtype=torch.bool, device=device).tril(start)
        return (tri if mask is None else mask & tri), False

    def select_outputs(self, x: Tensor, output_positions: OutputPositions | None, start: int,
                       kv_cache: KVCache | None) -> Tensor:
        """The final hidden states whose logits are asked for, from those of positions
        start..start+T-1 (B, T, D): all of them, (B, T', D) for a slice, or (N, D) for a (rows,
        columns) pair; with `shifted_prediction` realigned first (`realign`) so that the state
        returned for position i is the one that predicts token i. `kv_cache`: the call's cache."""
        if self.config.shifted_prediction:
            x = self.realign(x, start, kv_cache)
        if output_positions is None:
            return x
        if isinstance(output_positions, tuple):
            return x[output_positions]
        return x[:, output_positions]

    @staticmethod
    def realign(x: Tensor, start: int, kv_cache: KVCache | None) -> Tensor:
        """States (B, T, D) of positions start..start+T-1 whose state at i predicts token i + 1 (an
        autoregressive head, as Dream keeps), moved one to the right: position i gets the state of
        i - 1, position 0 its own (nothing precedes it; Dream's sampler does the same):

            state     h0  h1  h2  h3          the head on h_i predicts token i + 1
            realigned h0  h0  h1  h2          position i gets h_(i-1)

        A run that starts after position 0 (only against a `kv_cache`) reads the state of
        start - 1 from the cache, which keeps every run's states (`KVCache.hidden`); ValueError
        when no earlier run filled it."""
        B, T, D = x.shape
        if start > 0 and (kv_cache is None or kv_cache.hidden is None):
            raise ValueError(f"the logits at position {start} come from position {start - 1} (shifted prediction): "
                             f"a run that starts at {start} needs that position's state; pass a KVCache that an "
                             f"earlier run through position {start - 1} filled")
        if kv_cache is not None:  # keep every run's states, for later runs that start after them
            if kv_cache.hidden is None:
                kv_cache.hidden = torch.zeros(B, kv_cache.length, D, device=x.device, dtype=x.dtype)
            kv_cache.hidden[:, start:start + T] = x
        before = x[:, :1] if start == 0 else kv_cache.hidden[:, start - 1:start]  # (B, 1, D)
        return torch.cat([before, x[:, :-1]], dim=1)  # (B, T, D)

    # ----------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.wte.weight.dtype

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
