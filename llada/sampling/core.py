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
from typing import Any

import torch
from torch import Tensor

from llada.config import ModelConfig
from llada.errors import GenerationError
from llada.model import KVCache, LLaDAModel
from llada.sampling.options import SamplerOptions
from llada.sampling.predict import Predictor
from llada.sampling.remasking import sampled_ranking
from llada.sampling.schedule import dream_transfer_count, num_transfer_tokens


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
    """Runs the model for one step, with or without a key/value cache, with or without CFG; reads
    cfg_scale, cache and (block_causal) block_size.

    Returns the logits of the current block only: the rest of the canvas never receives tokens
    in this step, so its logits are not needed (and the output head is the costliest layer).
    With a cache, a block's first step is a full pass that fills a static `KVCache` of the whole
    canvas; its later steps re-run only the block ("dual": the prompt and the masked suffix stay
    as cached) or the block and everything after it ("prefix"), writing their keys/values in
    place: no tensor is concatenated or grows from step to step. refresh_every_step rebuilds the
    cache at every step instead of every block (a check: it must reproduce the uncached output).
    """

    def __init__(self, model: LLaDAModel, options: SamplerOptions, attention_mask: Tensor | None,
                 prompt_mask: Tensor, stats: GenerateStats, refresh_every_step: bool = False):
        self.model, self.am, self.cfg_scale, self.cache = model, attention_mask, options.cfg_scale, options.cache
        self.prompt_mask, self.mask_id, self.stats = prompt_mask, model.config.mask_token_id, stats
        self.refresh_every_step = refresh_every_step
        self.kv: KVCache | None = None
        self.block_size = options.block_size if options.block_causal else None  # the block-causal attention's block
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

    def __call__(self, x: Tensor, start: int, end: int, first: bool) -> Tensor:
        """The logits (B, end - start, V) of canvas `x` (B, L) at positions start..end; `first`:
        the block's first step (a cache is refreshed there)."""
        refresh = first or self.refresh_every_step
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


@torch.no_grad()
def denoise(model: LLaDAModel, canvas: Tensor, options: SamplerOptions | None = None, *, start: int,
            attention_mask: Tensor | None = None, generator: torch.Generator | None = None,
            stats: GenerateStats | None = None, refresh_every_step: bool = False) -> Iterator[StepState]:
    """Unmask the masked positions of `canvas[:, start:]` block by block, yielding after each step.

    `canvas` (B, L) is updated in place; positions before `start` are the prompt (they condition,
    and CFG masks them in the unconditional pass). `options` (default: the defaults for a response
    of L - start tokens) travel whole and are read where they are used: by `_Forward` (the model
    call), `Predictor` (tokens and confidences), the loop (`_semi_autoregressive`, or
    `_block_diffusion` with block_causal: blocks, steps and selection) and here (early_exit).
    refresh_every_step: see `_Forward`.
    """
    options = options if options is not None else SamplerOptions(gen_length=canvas.shape[1] - start)
    cfg = model.config
    stats = stats if stats is not None else GenerateStats()
    prompt_mask = torch.zeros_like(canvas, dtype=torch.bool)
    prompt_mask[:, :start] = canvas[:, :start] != cfg.mask_token_id
    forward = _Forward(model, options, attention_mask, prompt_mask, stats, refresh_every_step)
    predict = Predictor(cfg, options, generator)
    loop = _block_diffusion if options.block_causal else _semi_autoregressive
    step = 0
    for block, end, transfer in loop(canvas, start, options, forward, predict):
        if transfer is None:  # the block is finished
            if options.early_exit and end < canvas.shape[1] and _ended(cfg, canvas[:, start:end]):
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


def _select(options: SamplerOptions, confidence: Tensor, masked: Tensor, quota: Tensor, step: int,
            generator: torch.Generator | None) -> Tensor:
    """The positions (B, T) a semi-autoregressive step unmasks: every one at or above `threshold`,
    Fast-dLLM's `factor` rule, or with fixed steps a count per row, from the `schedule`
    (`schedule.py`: "even" takes `quota[:, step]`, "dream" its share of those still masked), of the
    most confident, or with Dream's `alg_temp` a draw from softmax(confidence / alg_temp)."""
    if options.threshold is not None:
        return select_threshold(confidence, masked, options.threshold)
    if options.factor is not None:
        return select_factor(confidence, masked, options.factor)
    if options.schedule == "even":
        count = quota[:, step]
    else:
        count = dream_transfer_count(masked.sum(-1), step, options.steps_per_block, options.schedule_eps)
    ranking = confidence if options.alg_temp is None else sampled_ranking(confidence, options.alg_temp, generator)
    return select_quota(ranking, count) & masked


def _semi_autoregressive(canvas: Tensor, start: int, options: SamplerOptions, forward: _Forward,
                         predict: Predictor) -> Iterator[tuple[int, int, Tensor | None]]:
    """LLaDA's `generate.py` blocks of `block_size` from `start` (the answer's first position), with
    Fast-dLLM's threshold/factor rules and caches: yields (block, block end, positions set) after
    each step and (block, block end, None) when a block is finished. Fixed steps: exactly
    steps_per_block per block, chosen by `_select`; threshold/factor: until the block is unmasked."""
    mask_id = predict.cfg.mask_token_id
    block_length, steps_per_block = options.block_size, options.steps_per_block
    for block in range((canvas.shape[1] - start) // block_length):
        s, e = start + block * block_length, start + (block + 1) * block_length
        quota = num_transfer_tokens((canvas[:, s:e] == mask_id).sum(-1), steps_per_block)  # (B, steps_per_block)
        for i in range(steps_per_block if options.fixed_steps else block_length):
            masked = canvas[:, s:e] == mask_id  # (B, T)
            x0, confidence = predict(forward(canvas, s, e, first=i == 0))
            confidence = confidence.masked_fill(~masked, float("-inf"))
            transfer = _select(options, confidence, masked, quota, i, predict.generator)
            canvas[:, s:e] = torch.where(transfer, x0, canvas[:, s:e])
            yield block, e, _step_mask(canvas, s, e, transfer)
            if not options.fixed_steps and not bool((canvas[:, s:e] == mask_id).any()):
                break  # one host check per step: the step count is data dependent here
        yield block, e, None


def _block_diffusion(canvas: Tensor, start: int, options: SamplerOptions, forward: _Forward,
                     predict: Predictor) -> Iterator[tuple[int, int, Tensor | None]]:
    """Block diffusion as LLaDA 2.x's `generate` (modeling_llada2_moe.py; 2.1's editing from
    modeling_llada21_moe.py) does it. Blocks of `block_size` count from position 0 (the prompt's
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
    block_length, steps_per_block = options.block_size, options.steps_per_block
    threshold, editing_threshold = options.threshold, options.editing_threshold
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
            done |= resolved if editing_threshold is None else post > options.max_post_steps
            if bool(done.all()):  # one host check per step
                break
            logits = forward(canvas, s, e, first=i == 0)
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
    gen_length, device = options.gen_length, model.device
    L = options.canvas_length(P)  # block diffusion decodes whole blocks: its canvas ends on a block boundary
    canvas = torch.full((B, L), model.config.mask_token_id, dtype=torch.long, device=device)
    canvas[:, :P] = input_ids.to(device)
    shown = canvas[:, :P + gen_length]  # the answer's view (the same storage)
    am = None
    if attention_mask is not None and not bool(attention_mask.all()):
        am = torch.cat([attention_mask.to(device).long(), torch.ones(B, L - P, dtype=torch.long, device=device)], 1)
    stats = GenerateStats(tokens=B * gen_length)
    state = StepState(shown, torch.zeros_like(shown, dtype=torch.bool), 0, -1, P, stats)
    for state in denoise(model, canvas, options, start=P, attention_mask=am, generator=generator, stats=stats):
        yield StepState(shown, state.transferred[:, :P + gen_length], state.block, state.step, P, stats)
    yield StepState(shown, torch.zeros_like(shown, dtype=torch.bool), state.block, state.step, P, stats, final=True)


@torch.no_grad()
def infill(model: LLaDAModel, input_ids: Tensor, attention_mask: Tensor | None = None,
           options: SamplerOptions | None = None, *, generator: torch.Generator | None = None,
           **overrides: Any) -> GenerateOutput:
    """Fill the mask tokens of `input_ids` (B, L) wherever they are (the model sees both sides).

    One block spans the sequence: `options` (default: the defaults; `overrides` replace fields of
    it, `infill(model, ids, temperature=0.5)`) apply with gen_length L and one block; `steps`
    None means the largest number of masks in a row (one token per step), and rows with fewer
    masks spread theirs over the same steps. Raises GenerationError for a row without a mask.
    """
    mask_id = model.config.mask_token_id
    masks = (input_ids == mask_id).sum(-1)
    if not bool((masks > 0).all()):
        raise GenerationError("every row to infill needs at least one mask token")
    options = options if options is not None else SamplerOptions()
    steps = overrides.pop("steps", options.steps)
    steps = int(masks.max()) if steps is None else steps
    options = options.replace(**{**overrides, "gen_length": input_ids.shape[1], "block_length": None, "steps": steps})
    canvas = input_ids.clone().to(model.device)
    am = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.to(model.device)
    stats = GenerateStats()
    deque(denoise(model, canvas, options, start=0, attention_mask=am, generator=generator, stats=stats),
          maxlen=0)  # run to the end
    stats.tokens = int(masks.sum())
    return GenerateOutput(canvas, 0, stats)
