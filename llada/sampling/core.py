"""The reverse process: start from a fully masked response and unmask it step by step.

    canvas  [prompt | M M M M M M M M]         blocks of `block_length`, left to right
    step:   predict every M at once ──▶ score each prediction (remasking strategy)
            ──▶ keep the best k (k from the transfer schedule, or all above a threshold)
            ──▶ the rest stay M for the next step

Parameters keep the names and meaning of LLaDA's reference `generate.py` (steps, gen_length,
block_length, temperature, cfg_scale, remasking); at temperature 0 the output is the reference's
token for token. Fast-dLLM's speed-ups are options: confidence-threshold and `factor` parallel
decoding, and a prefix or dual (prefix + suffix) key/value cache refreshed at each block start.

Everything is vectorised over the batch: rows with prompts of different lengths (left padded, with
an attention mask) advance independently, and the fixed-step path has no host synchronisation
inside its step loop. Threshold and factor decoding check once per step whether the block is
done (their step count is data dependent); early exit checks once per block.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from llada.config import ModelConfig
from llada.errors import GenerationError
from llada.model import KVCache, LLaDAModel
from llada.sampling.options import SamplerOptions
from llada.sampling.remasking import REMASKING, sampled_ranking
from llada.sampling.schedule import dream_transfer_count, num_transfer_tokens

_D = SamplerOptions()  # the keyword defaults below are the options' own, defined once there


@dataclass
class GenerateStats:
    """Forward passes and throughput of one call."""

    full_forwards: int = 0  # passes over the whole canvas
    cached_forwards: int = 0  # passes over a block (and suffix) against cached keys/values
    tokens: int = 0  # response tokens generated, summed over rows
    steps: int = 0  # denoising steps taken

    @property
    def forwards(self) -> int:
        return self.full_forwards + self.cached_forwards

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / max(1, self.forwards)


@dataclass
class GenerateOutput:
    sequences: Tensor  # (B, P + gen_length): prompt (as given, left padded) then the response
    prompt_length: int
    stats: GenerateStats = field(default_factory=GenerateStats)

    @property
    def responses(self) -> Tensor:
        return self.sequences[:, self.prompt_length:]


@dataclass
class StepState:
    """What a consumer of `sample_steps` sees after each step. `canvas` is the sampler's own
    buffer, updated in place by the next step: copy it to keep it."""

    canvas: Tensor  # (B, L) current ids, masks included
    transferred: Tensor  # (B, L) bool, positions unmasked at this step
    block: int
    step: int  # step index over the whole call
    prompt_length: int
    stats: GenerateStats = field(default_factory=GenerateStats)  # forwards so far
    final: bool = False  # the last state of the call: canvas is the finished output


def add_gumbel_noise(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """Gumbel-max sampling in float64 (low precision hurts quality): argmax of the result is a
    sample from softmax(logits / temperature); temperature 0 returns the logits (greedy)."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    gen_device = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape, dtype=torch.float64, generator=generator, device=gen_device).to(logits.device)
    return logits.exp() / (-torch.log(u)) ** temperature


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """`logits` (..., V) with every token outside the top_k most probable, then outside the nucleus
    of probability top_p, set to -inf, in the order LLaDA 2.x's sampler (and transformers) applies
    them; Dream's applies top_p first, which is the same when only one is given. The nucleus is the
    shortest prefix of the descending order whose probabilities sum to more than top_p (the most
    probable token is always kept). None (or top_p 1) leaves the logits as they are."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        reached = ordered.softmax(-1).cumsum(-1) > top_p  # (..., V) in descending order
        beyond = torch.cat([torch.zeros_like(reached[..., :1]), reached[..., :-1]], -1)  # the tokens after it
        logits = logits.masked_fill(torch.zeros_like(beyond).scatter_(-1, order, beyond), float("-inf"))
    return logits


def never_sampled(config: ModelConfig, width: int, device: torch.device) -> Tensor:
    """(width,) bool: the output columns no sampler may pick: the mask id (a canvas must end with
    no mask left) and the padded embedding rows past vocab_size (ids the tokenizer cannot decode).
    Confidences still come from the full softmax, so rankings are the reference sampler's."""
    never = torch.zeros(width, dtype=torch.bool, device=device)
    never[config.vocab_size:] = True
    never[config.mask_token_id] = True
    return never


# -------------------------------------------------------------------------------------- selection


def select_quota(confidence: Tensor, k: Tensor) -> Tensor:
    """The k[b] most confident positions of each row (B, T): rank by a stable descending sort, so
    the row-wise k needs no Python loop."""
    order = confidence.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                             .expand_as(order))
    return ranks < k[:, None]


def select_threshold(confidence: Tensor, masked: Tensor, threshold: float) -> Tensor:
    """Every masked position with confidence >= threshold, and always the most confident masked one
    (confidence, masked: (B, T); unmasked positions are never chosen, whatever their confidence)."""
    confidence = confidence.double().masked_fill(~masked, float("-inf"))  # the comparison in float64
    top = torch.zeros_like(masked).scatter_(-1, confidence.argmax(-1, keepdim=True), True)
    return masked & ((confidence >= threshold) | top)


def select_factor(confidence: Tensor, masked: Tensor, factor: float) -> Tensor:
    """Fast-dLLM's factor rule: take the n most confident where the r-th (1-based) has confidence
    >= 1 - factor / (r + 1); always at least one. Ranks count masked positions only."""
    confidence = confidence.masked_fill(~masked, float("-inf"))
    values, order = confidence.sort(dim=-1, descending=True, stable=True)
    ranks = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=torch.float64)
    need = 1.0 - factor / (ranks + 1.0)
    need[0] = -1.0
    accept = values.double() >= need
    k = torch.minimum(accept.sum(-1), masked.sum(-1))
    keep_sorted = torch.arange(values.shape[-1], device=values.device)[None] < k[:, None]
    return torch.zeros_like(masked).scatter_(-1, order, keep_sorted) & masked


# ------------------------------------------------------------------------------------------ forward


class _Forward:
    """Runs the model for one step, with or without a key/value cache, with or without CFG.

    Returns the logits of the current block only: the rest of the canvas never receives tokens
    in this step, so its logits are not needed (and the output head is the costliest layer).
    With a cache, a block's first step is a full pass that fills a static `KVCache` of the whole
    canvas; its later steps re-run only the block ("dual": the prompt and the masked suffix stay
    as cached) or the block and everything after it ("prefix"), writing their keys/values in
    place: no tensor is concatenated or grows from step to step.
    """

    def __init__(self, model: LLaDAModel, attention_mask: Tensor | None, cfg_scale: float, cache: str | None,
                 prompt_mask: Tensor, mask_id: int, stats: GenerateStats, block_size: int | None = None):
        self.model, self.am, self.cfg_scale, self.cache = model, attention_mask, cfg_scale, cache
        self.prompt_mask, self.mask_id, self.stats = prompt_mask, mask_id, stats
        self.kv: KVCache | None = None
        self.block_size = block_size  # block diffusion: the block-causal attention's block
        self.clean = 0  # block diffusion with a cache: positions before this are cached with their final tokens

    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.cfg_scale <= 0:
            return x, self.am
        # unsupervised CFG: the unconditional row sees the prompt replaced by masks; one batched pass
        uncond = torch.where(self.prompt_mask, torch.full_like(x, self.mask_id), x)
        am = None if self.am is None else torch.cat([self.am, self.am])
        return torch.cat([x, uncond]), am

    def _guide(self, logits: Tensor) -> Tensor:
        if self.cfg_scale <= 0:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + (self.cfg_scale + 1) * (cond - uncond)

    def __call__(self, x: Tensor, start: int, end: int, refresh: bool) -> Tensor:
        ids, am = self._inputs(x)
        if self.block_size is not None:
            return self._block_causal(ids, am, start, end, refresh)
        if self.cache is None:
            self.stats.full_forwards += 1
            return self._guide(self.model(ids, attention_mask=am, output_positions=slice(start, end)))
        if self.kv is None:
            self.kv = KVCache(self.model.config, ids.shape[0], ids.shape[1], ids.device, self.model.dtype)
        if refresh:  # block start: a full pass that also fills the cache
            self.stats.full_forwards += 1
            logits = self.model(ids, attention_mask=am, output_positions=slice(start, end), kv_cache=self.kv)
            return self._guide(logits)
        self.stats.cached_forwards += 1
        stop = ids.shape[1] if self.cache == "prefix" else end  # prefix: block + suffix are re-run
        logits = self.model(ids[:, start:stop], attention_mask=am, kv_cache=self.kv, cache_position=start,
                            output_positions=slice(0, end - start))
        return self._guide(logits)

    def _block_causal(self, ids: Tensor, am: Tensor | None, start: int, end: int, refresh: bool) -> Tensor:
        """Block diffusion: nothing after the block is visible to it, so only positions up to `end`
        run. Without a cache every step runs them all (as LLaDA 2.x's generate does); with one, a
        block's first step runs from the first position not yet cached with its final token (the
        previous block, finished since its last run) and the later steps only the block. Exact:
        a finished block's keys and values depend on nothing that changes later."""
        if self.cache is None:
            self.stats.full_forwards += 1
            logits = self.model(ids[:, :end], attention_mask=None if am is None else am[:, :end],
                                output_positions=slice(start, end), block_size=self.block_size)
            return self._guide(logits)
        if self.kv is None:
            self.kv = KVCache(self.model.config, ids.shape[0], ids.shape[1], ids.device, self.model.dtype)
        run = self.clean if refresh else start
        if run == 0:
            self.stats.full_forwards += 1
        else:
            self.stats.cached_forwards += 1
        logits = self.model(ids[:, run:end], attention_mask=am, kv_cache=self.kv, cache_position=run,
                            output_positions=slice(start - run, end - run), block_size=self.block_size)
        if refresh:
            self.clean = start
        return self._guide(logits)


# --------------------------------------------------------------------------------------------- loop


class _Predictor:
    """One step's predictions from the block's logits (B, T, V): x0 (B, T), the sampled (or greedy)
    token at each position, and its confidence (B, T) by the remasking rule, at every position."""

    def __init__(self, cfg: ModelConfig, temperature: float, remasking: str, exact: bool, logits_eos_inf: bool,
                 confidence_eos_eot_inf: bool, generator: torch.Generator | None, top_k: int | None = None,
                 top_p: float | None = None, tempered_confidence: bool = False):
        self.cfg, self.temperature, self.score, self.exact = cfg, temperature, REMASKING[remasking], exact
        self.logits_eos_inf, self.confidence_eos_eot_inf, self.generator = logits_eos_inf, confidence_eos_eot_inf, generator
        self.top_k, self.top_p = (top_k, top_p) if temperature > 0 else (None, None)  # greedy: nothing to cut
        self.tempered = tempered_confidence and temperature > 0
        self.never: Tensor | None = None
        self.sampled: Tensor | None = None  # tempered: the last step's distribution sampled from (logits)

    def probability(self, logits: Tensor, x0: Tensor, confidence: Tensor) -> Tensor:
        """The probability (B, T) of each prediction under the step's logits, in float64: what block
        diffusion's threshold and editing rules compare (as LLaDA 2.x's `x0_p`), whatever ranks; with
        tempered_confidence, under the distribution it was sampled from. `confidence` (this step's,
        from `__call__`) already is it under low-confidence remasking."""
        low_confidence = REMASKING["low_confidence"]
        if self.score is low_confidence and self.exact and not self.confidence_eos_eot_inf:
            return confidence
        return low_confidence((self.sampled if self.tempered else logits).double(), x0, None)

    def __call__(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        if self.logits_eos_inf:
            logits[..., cfg.eos_token_id] = float("-inf")
        if self.never is None:
            self.never = never_sampled(cfg, logits.shape[-1], logits.device)
        kept = scored = logits
        if self.tempered or self.top_k is not None or self.top_p is not None:
            # the distribution sampled from: softmax(logits / temperature) cut to top_k, then top_p
            # (temperature first, as LLaDA 2.x and Dream apply it: it changes which tokens make top_p)
            sampled = filter_logits(logits.double() / self.temperature, self.top_k, self.top_p)
            kept = logits.masked_fill(sampled == float("-inf"), float("-inf"))
            # LLaDA's generate.py ranks by the plain softmax; LLaDA 2.x and Dream by this distribution
            scored = sampled if self.tempered else logits
            self.sampled = sampled
        x0 = add_gumbel_noise(kept.masked_fill(self.never, float("-inf")), self.temperature, self.generator).argmax(-1)
        if self.confidence_eos_eot_inf:  # an EOS/EOT prediction is kept last (App. B.4)
            scored = scored.clone()
            scored[..., cfg.eos_token_id] = float("-inf")
            if cfg.eot_token_id is not None:
                scored[..., cfg.eot_token_id] = float("-inf")
        # Fixed steps rank in the logits' dtype, as LLaDA's generate.py does (bf16 parity); rules that
        # compare against a number (threshold, factor, editing) do it in float64 as Fast-dLLM does: a
        # bf16 confidence would read 0.9 as 0.8984375.
        return x0, self.score(scored.double() if self.exact else scored, x0, self.generator)


@torch.no_grad()
def denoise(model: LLaDAModel, canvas: Tensor, *, start: int, block_length: int, steps: int,
            attention_mask: Tensor | None = None, temperature: float = _D.temperature,
            cfg_scale: float = _D.cfg_scale, remasking: str = _D.remasking, threshold: float | None = None,
            factor: float | None = None,
            cache: str | None = None, logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False,
            early_exit: bool = False, generator: torch.Generator | None = None,
            stats: GenerateStats | None = None, refresh_every_step: bool = False,
            block_causal: bool = False, editing_threshold: float | None = None,
            max_post_steps: int = _D.max_post_steps, schedule: str = _D.schedule,
            schedule_eps: float = _D.schedule_eps, alg_temp: float | None = None,
            steps_per_block: int | None = None, top_k: int | None = None, top_p: float | None = None,
            tempered_confidence: bool = False) -> Iterator[StepState]:
    """Unmask the masked positions of `canvas[:, start:]` block by block, yielding after each step.

    `canvas` (B, L) is updated in place. `steps` is the total over all blocks. Positions before
    `start` are the prompt (they condition, and CFG masks them in the unconditional pass).
    refresh_every_step rebuilds the cache at every step instead of every block (a check: it must
    reproduce the uncached output). block_causal, editing_threshold, max_post_steps: block
    diffusion, see `_block_diffusion` (`steps_per_block`: its steps per block, default steps over the
    blocks of canvas[:, start:]); schedule, schedule_eps, alg_temp: see `_semi_autoregressive`;
    top_k, top_p, tempered_confidence: see `SamplerOptions` and `_Predictor`.
    """
    cfg = model.config
    num_blocks = max(1, (canvas.shape[1] - start) // block_length)
    steps_per_block = steps_per_block if steps_per_block is not None else steps // num_blocks
    stats = stats if stats is not None else GenerateStats()
    prompt_mask = torch.zeros_like(canvas, dtype=torch.bool)
    prompt_mask[:, :start] = canvas[:, :start] != cfg.mask_token_id
    forward = _Forward(model, attention_mask, cfg_scale, cache, prompt_mask, cfg.mask_token_id, stats,
                       block_size=block_length if block_causal else None)
    fixed_steps = threshold is None and factor is None and editing_threshold is None
    predict = _Predictor(cfg, temperature, remasking, not fixed_steps, logits_eos_inf, confidence_eos_eot_inf,
                         generator, top_k, top_p, tempered_confidence)
    if block_causal:
        steps_of = _block_diffusion(canvas, start, block_length, steps_per_block, forward, predict, threshold,
                                    editing_threshold, max_post_steps, refresh_every_step)
    else:
        steps_of = _semi_autoregressive(canvas, start, block_length, steps_per_block, forward, predict,
                                        threshold, factor, refresh_every_step,
                                        _FixedSteps(schedule, schedule_eps, alg_temp, generator))
    step = 0
    for block, end, transfer in steps_of:
        if transfer is None:  # the block is finished
            if early_exit and end < canvas.shape[1] and _ended(cfg, canvas[:, start:end]):
                _fill_eos(cfg, canvas, end)
                return
            continue
        stats.steps += 1
        yield StepState(canvas, transfer, block, step, start, stats)
        step += 1


def _ended(cfg: ModelConfig, answer: Tensor) -> bool:
    """Whether every row's answer so far holds an EOS or end-of-turn (one host check per block)."""
    ended = answer == cfg.eos_token_id
    if cfg.eot_token_id is not None:
        ended |= answer == cfg.eot_token_id
    return bool(ended.any(-1).all())


def _fill_eos(cfg: ModelConfig, canvas: Tensor, end: int) -> None:
    canvas[:, end:] = torch.where(canvas[:, end:] == cfg.mask_token_id, cfg.eos_token_id, canvas[:, end:])


def _step_mask(canvas: Tensor, s: int, e: int, transfer: Tensor) -> Tensor:
    full = torch.zeros_like(canvas, dtype=torch.bool)
    full[:, s:e] = transfer
    return full


@dataclass
class _FixedSteps:
    """How a fixed-steps sampler picks: how many per step (`schedule.py`: "even" or "dream") and
    which (the most confident, or with Dream's alg_temp a draw from softmax(confidence / alg_temp))."""

    schedule: str = "even"
    eps: float = 1e-3
    alg_temp: float | None = None
    generator: torch.Generator | None = None

    def select(self, confidence: Tensor, masked: Tensor, quota: Tensor, step: int, steps: int) -> Tensor:
        count = quota[:, step] if self.schedule == "even" else dream_transfer_count(masked.sum(-1), step, steps, self.eps)
        ranking = confidence if self.alg_temp is None else sampled_ranking(confidence, self.alg_temp, self.generator)
        return select_quota(ranking, count) & masked


def _semi_autoregressive(canvas: Tensor, start: int, block_length: int, steps_per_block: int, forward: _Forward,
                         predict: _Predictor, threshold: float | None, factor: float | None,
                         refresh_every_step: bool, fixed: _FixedSteps | None = None) -> Iterator[tuple[int, int, Tensor]]:
    """LLaDA's `generate.py` blocks from `start` (the answer's first position), with Fast-dLLM's
    threshold/factor rules and caches: yields (block, block end, positions set) after each step and
    (block, block end, None) when a block is finished. Fixed steps: exactly steps_per_block per
    block; threshold/factor: until the block is unmasked. `fixed`: the count and choice of fixed steps."""
    mask_id = predict.cfg.mask_token_id
    fixed_steps = threshold is None and factor is None
    fixed = fixed if fixed is not None else _FixedSteps()
    for block in range((canvas.shape[1] - start) // block_length):
        s, e = start + block * block_length, start + (block + 1) * block_length
        quota = num_transfer_tokens((canvas[:, s:e] == mask_id).sum(-1), steps_per_block)  # (B, steps_per_block)
        for i in range(steps_per_block if fixed_steps else block_length):
            masked = canvas[:, s:e] == mask_id  # (B, T)
            x0, confidence = predict(forward(canvas, s, e, refresh=i == 0 or refresh_every_step))
            confidence = confidence.masked_fill(~masked, float("-inf"))
            if threshold is not None:
                transfer = select_threshold(confidence, masked, threshold)
            elif factor is not None:
                transfer = select_factor(confidence, masked, factor)
            else:
                transfer = fixed.select(confidence, masked, quota, i, steps_per_block)
            canvas[:, s:e] = torch.where(transfer, x0, canvas[:, s:e])
            yield block, e, _step_mask(canvas, s, e, transfer)
            if not fixed_steps and not bool((canvas[:, s:e] == mask_id).any()):
                break  # one host check per step: the step count is data dependent here
        yield block, e, None


def _block_diffusion(canvas: Tensor, start: int, block_length: int, steps_per_block: int, forward: _Forward,
                     predict: _Predictor, threshold: float | None, editing_threshold: float | None,
                     max_post_steps: int, refresh_every_step: bool) -> Iterator[tuple[int, int, Tensor]]:
    """Block diffusion as LLaDA 2.x's `generate` (modeling_llada2_moe.py; 2.1's editing from
    modeling_llada21_moe.py) does it. Blocks of `block_length` count from position 0 (the prompt's
    last block is the first decoded, its prompt tokens kept; the canvas ends on a block boundary)
    and attention is causal across them. Each step's quota comes from the block's length split
    over steps_per_block (a block with fewer masks finishes early); with a threshold a step keeps
    every masked prediction whose probability is above it (strictly) when at least the quota are,
    else the quota ranked first by the remasking rule (low_confidence: the most probable). With
    editing_threshold, a step also replaces any decoded answer token of the block whose prediction
    differs and has a probability above it; once a row's block has no mask, it
    goes on for at most max_post_steps steps, stopping at the first that edits nothing. Yields as
    `_semi_autoregressive` does."""
    mask_id = predict.cfg.mask_token_id
    B, L = canvas.shape
    for block in range(start // block_length, L // block_length):
        s, e = block * block_length, (block + 1) * block_length
        quota = num_transfer_tokens(torch.full((B,), block_length, device=canvas.device), steps_per_block)
        answer = (torch.arange(s, e, device=canvas.device) >= start)[None]  # (1, T): positions that may be edited
        post = torch.zeros(B, dtype=torch.long, device=canvas.device)
        done = torch.zeros(B, dtype=torch.bool, device=canvas.device)
        i = 0
        while True:
            masked = canvas[:, s:e] == mask_id
            resolved = ~masked.any(-1)
            post += resolved.long()
            done |= resolved if editing_threshold is None else post > max_post_steps
            if bool(done.all()):  # one host check per step
                break
            logits = forward(canvas, s, e, refresh=i == 0 or refresh_every_step)
            x0, confidence = predict(logits)
            k = torch.minimum(quota[:, min(i, steps_per_block - 1)], masked.sum(-1))
            transfer = select_quota(confidence.masked_fill(~masked, float("-inf")), k) & masked  # the quota
            if threshold is not None or editing_threshold is not None:
                p = predict.probability(logits, x0, confidence)
            if threshold is not None:  # all above it instead, when at least the quota are
                above = masked & (p > threshold)
                transfer = torch.where((above.sum(-1) >= k)[:, None], above, transfer)
            if editing_threshold is not None:
                edit = answer & ~masked & (p > editing_threshold) & (x0 != canvas[:, s:e])
                transfer |= edit
                done_after = resolved & ~edit.any(-1)  # nothing masked and nothing edited: the row is final
            transfer &= ~done[:, None]
            canvas[:, s:e] = torch.where(transfer, x0, canvas[:, s:e])
            yield block, e, _step_mask(canvas, s, e, transfer)
            if editing_threshold is not None:
                done |= done_after
            i += 1
        yield block, e, None


# ------------------------------------------------------------------------------------------- public


@torch.no_grad()
def diffusion_steps(model: LLaDAModel, input_ids: Tensor, options: SamplerOptions,
                    attention_mask: Tensor | None = None,
                    generator: torch.Generator | None = None) -> Iterator[StepState]:
    """The reverse process after each prompt row of `input_ids` (B, P), left padded with
    `attention_mask` (B, P) when rows differ in length: yields the state after every step, then a
    final state whose canvas (B, P + gen_length) is the output. Call through `llada.sample`.

    Follows LLaDA's `generate.py` (low-confidence remasking, semi-autoregressive blocks, CFG) and
    Fast-dLLM's `generate.py` (threshold / factor decoding, prefix and dual caches).
    """
    B, P = input_ids.shape
    gen_length, device, block = options.gen_length, model.device, options.block_size
    # block diffusion decodes whole blocks counted from position 0: the canvas ends on a block boundary
    L = -(-(P + gen_length) // block) * block if options.block_causal else P + gen_length
    canvas = torch.full((B, L), model.config.mask_token_id, dtype=torch.long, device=device)
    canvas[:, :P] = input_ids.to(device)
    shown = canvas[:, :P + gen_length]  # the answer's view (the same storage)
    am = None
    if attention_mask is not None and not bool(attention_mask.all()):
        am = torch.cat([attention_mask.to(device).long(), torch.ones(B, L - P, dtype=torch.long, device=device)], 1)
    stats = GenerateStats(tokens=B * gen_length)
    state = StepState(shown, torch.zeros_like(shown, dtype=torch.bool), 0, -1, P, stats)
    for state in denoise(model, canvas, start=P, block_length=block, steps=options.num_steps,
                         attention_mask=am, temperature=options.temperature, cfg_scale=options.cfg_scale,
                         remasking=options.remasking, threshold=options.threshold, factor=options.factor,
                         cache=options.cache, logits_eos_inf=options.logits_eos_inf,
                         confidence_eos_eot_inf=options.confidence_eos_eot_inf,
                         early_exit=options.early_exit, generator=generator, stats=stats,
                         block_causal=options.block_causal, editing_threshold=options.editing_threshold,
                         max_post_steps=options.max_post_steps, schedule=options.schedule,
                         schedule_eps=options.schedule_eps, alg_temp=options.alg_temp,
                         steps_per_block=options.steps_per_block, top_k=options.top_k, top_p=options.top_p,
                         tempered_confidence=options.tempered_confidence):
        yield StepState(shown, state.transferred[:, :P + gen_length], state.block, state.step, P, stats)
    yield StepState(shown, torch.zeros_like(shown, dtype=torch.bool), state.block, state.step, P, stats, final=True)


@torch.no_grad()
def infill(model: LLaDAModel, input_ids: Tensor, attention_mask: Tensor | None = None, *, steps: int | None = None,
           temperature: float = _D.temperature, remasking: str = _D.remasking,
           generator: torch.Generator | None = None) -> GenerateOutput:
    """Fill the mask tokens of `input_ids` wherever they are (the model sees both sides).

    One block spans the sequence; `steps` defaults to the largest number of masks in a row (one
    token per step); rows with fewer masks spread theirs over the same steps.
    """
    mask_id = model.config.mask_token_id
    masks = (input_ids == mask_id).sum(-1)
    if not bool((masks > 0).all()):
        raise GenerationError("every row to infill needs at least one mask token")
    L = input_ids.shape[1]
    steps = int(masks.max()) if steps is None else steps
    if steps <= 0:
        raise GenerationError(f"steps must be positive, got {steps}")
    if remasking not in REMASKING:
        raise GenerationError(f"unknown remasking {remasking!r}; choose one of: {', '.join(REMASKING)}")
    canvas = input_ids.clone().to(model.device)
    am = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.to(model.device)
    stats = GenerateStats()
    deque(denoise(model, canvas, start=0, block_length=L, steps=steps, attention_mask=am, temperature=temperature,
                  remasking=remasking, generator=generator, stats=stats), maxlen=0)  # run to the end
    stats.tokens = int(masks.sum())
    return GenerateOutput(canvas, 0, stats)
