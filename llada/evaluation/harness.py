"""lm-evaluation-harness adapter: the model `llada` (needs the `eval` extra).

    llada lm-eval --model llada --model_args pretrained=DIR,mc_num=128,steps=64 --tasks arc_easy
    torchrun --nproc_per_node N -m llada lm-eval --model llada --model_args pretrained=DIR --tasks ...
        # data parallel: each rank scores a share of the requests, rank 0 gathers and reports
        # (`accelerate launch --multi_gpu --num_processes N -m llada lm-eval ...` on GPUs does the same)
    llada lm-eval --model llada --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct --preset llada-8b-instruct --tasks gsm8k
        # the paper's settings for each task (llada/evaluation/presets.py); explicit flags win

The loading options of `LoadOptions` that the commands take as flags (dtype, revision,
quantization, compile, ...) are --model_args by the same names: `quantization=int8` loads the model
quantized, `compile=true` with each block compiled, as `llada.load` does.

`llada lm-eval` is lm-eval's own command line with this model registered (lm-eval has no plugin
discovery); from Python, `import llada.evaluation.harness` and then `lm_eval.simple_evaluate(model="llada")`.

- loglikelihood: the Eq. 6 Monte-Carlo estimate (exact for an autoregressive baseline); `is_greedy`
  by one-token-per-step deterministic decoding over exactly the continuation's length.
- loglikelihood_rolling: the Eq. 4 upper bound, windows of `max_length` tokens, each window
  conditioned on up to `rolling_context` tokens before it.
- generate_until: `llada.sample` (the reverse process; left to right for an AR baseline); every
  `SamplerOptions` field (steps, block_length, remasking, temperature, cfg_scale, threshold, factor,
  cache, ...) and a sampler `preset` (reference, fast, quality) can be given in --model_args, and
  max_gen_toks / until / temperature / top_k / top_p / do_sample from the task; requests with equal settings run
  `batch_size` prompts at a time, left padded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from llada.checkpoint import load
from llada.checkpoint.options import FLAG_NAMES, inference_options
from llada.errors import UserError
from llada.likelihood import is_greedy, log_likelihoods
from llada.runtime import check_device
from llada.sampling import SamplerOptions, sample
from llada.sampling.options import OPTION_NAMES
from llada.sampling.text import cut_at_stop_texts, decode_response, left_pad
from llada.tokenizer import encode, render_chat

SAMPLER_KEYS = ("preset", *OPTION_NAMES)  # --model_args that configure generate_until
LOAD_KEYS = tuple(k for k in FLAG_NAMES if k != "device")  # --model_args that say how to load (device: lm-eval's)


@dataclass(frozen=True)
class ScoringArgs:
    """The --model_args of the `llada` model that say how it scores, beyond its load and sampler options."""

    mc_num: int = 128  # Monte-Carlo samples of each Eq. 6 estimate (loglikelihood)
    mc_batch_size: int = 32  # of those, run in one forward
    is_greedy_check: bool = True  # compute is_greedy (one more decode per request)
    rolling_context: int = 0  # tokens of context before each loglikelihood_rolling window
    seed: int = 1234  # the noise of estimates and generation
    max_length: int | None = None  # the longest input (default: the model's max_sequence_length)

    @classmethod
    def take(cls, args: dict[str, Any]) -> ScoringArgs:
        """Its fields taken out of `args` (lm-eval hands over ints, bools and text); a value of the
        wrong kind or below its minimum is a UserError naming it."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in args:
                values[f.name] = _scoring_value(f.name, args.pop(f.name), f.name == "is_greedy_check")
        for name, low in (("mc_num", 1), ("mc_batch_size", 1), ("seed", 0)):
            if name in values and values[name] < low:
                raise UserError(f"--model_args {name} must be >= {low}, got {values[name]}")
        return cls(**values)


def _scoring_value(name: str, value: Any, boolean: bool) -> Any:
    if value is None:
        return None
    text = str(value).strip().lower()
    if boolean:
        if isinstance(value, bool) or text in ("true", "false"):
            return value if isinstance(value, bool) else text == "true"
        raise UserError(f"--model_args {name} must be true or false, got {value!r}")
    if isinstance(value, bool) or not (isinstance(value, int) or text.lstrip("-").isdigit()):
        raise UserError(f"--model_args {name} must be an integer, got {value!r}")
    return int(value)


def _check_device(device: str | None) -> str | None:
    """The device asked for, or None (accelerate's choice) for lm-eval's default "cuda:0" where that GPU is
    absent, as lm-eval's own HF model does; plain "cuda" without CUDA is an error."""
    if device is None:
        return None
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"device {device!r} is not a torch device (cpu, cuda, cuda:N, mps)") from e
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        print(f"llada: device {device!r} is not present; using {'cuda' if torch.cuda.is_available() else 'cpu'}",
              file=sys.stderr)
        return None
    check_device(device, "--device")  # cuda without CUDA, mps without Metal, ...: a one-line error
    return device


@register_model("llada")
class LLaDAEvalLM(TemplateLM):
    """A llada model directory (ours or GSAI-ML/LLaDA-8B-*) as an lm-eval model."""

    def __init__(self, pretrained: str, device: str | None = None, batch_size: int | str = 8, **args: Any) -> None:
        """`pretrained` loaded on `device` with the load options in `args`; the rest of `args` are
        `ScoringArgs` fields and sampler options (SAMPLER_KEYS). Raises UserError for an unknown
        or wrongly typed argument."""
        super().__init__()
        scoring = ScoringArgs.take(args)
        mc_num, seed, max_length = scoring.mc_num, scoring.seed, scoring.max_length
        unknown = sorted(set(args) - set(SAMPLER_KEYS) - set(LOAD_KEYS))
        if unknown:
            raise UserError(f"unknown --model_args {', '.join(unknown)}; sampler options are {', '.join(SAMPLER_KEYS)}"
                            f"; load options are {', '.join(LOAD_KEYS)}")
        sampler = {k: v for k, v in args.items() if k in SAMPLER_KEYS}
        import accelerate

        device = _check_device(device)
        # cpu=True is what makes accelerate join a torchrun/accelerate-launch process group over gloo
        self.accelerator = accelerate.Accelerator(cpu=device == "cpu" or not torch.cuda.is_available())
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        if device is None or self._world_size > 1:
            device = str(self.accelerator.device)
        how = inference_options({**{k: v for k, v in args.items() if k in LOAD_KEYS}, "device": device})
        bundle = load(pretrained, how)
        self.model, self.tokenizer = bundle.model.eval(), bundle.tokenizer
        self._device = torch.device(device)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.mc_num, self.mc_batch_size = mc_num, scoring.mc_batch_size
        self.greedy_check, self.rolling_context = scoring.is_greedy_check, scoring.rolling_context
        self._max_length = int(max_length or self.model.config.max_sequence_length)
        if not 2 <= self._max_length <= self.model.config.max_sequence_length:
            raise UserError(f"max_length must be in 2..{self.model.config.max_sequence_length} (the model's "
                            f"max_sequence_length), got {self._max_length}")
        if not 0 <= self.rolling_context <= self._max_length - 2:
            raise UserError(f"rolling_context must be in 0..{self._max_length - 2} (max_length - 2), "
                            f"got {self.rolling_context}")
        # the sampler's options; cfg_scale guides the likelihood estimates as well. Each generation
        # call draws its noise from `seed`, as `llada generate --seed` and a request's "seed" do.
        # (applied to each task's max_gen_toks in _plan, so steps and blocks fit the final length)
        preset = sampler.pop("preset", None)
        self._base = SamplerOptions.from_dict({"preset": preset}) if preset else SamplerOptions()
        self._given = {"seed": seed, **sampler}
        self.options = self._base.fitted(None, **self._given)  # refuses a bad value now, not mid-run
        self.options.check_block(self._max_length)  # ... and so is a length no context leaves room for
        if "gen_length" in sampler:  # (the default one is used only where a task sets no max_gen_toks)
            self.options.check_room(1, self._max_length)
        self.cfg_scale = self.options.cfg_scale
        self.generator = torch.Generator().manual_seed(seed + self._rank)
        self.stop_ids = self.model.config.roles.stops
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        """`message` on stderr the first time `key` comes up in this run (rank 0 only)."""
        if key not in self._warned:
            self._warned.add(key)
            if self._rank == 0:
                print(f"llada: {message}", file=sys.stderr)

    # ------------------------------------------------------------------ lm-eval plumbing
    @property
    def eot_token_id(self) -> int:
        return self.model.config.roles.eos

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return render_chat(self.tokenizer, chat_history, add_generation_prompt=add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return encode(self.tokenizer, string, add_special_tokens=bool(add_special_tokens))

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if self._world_size == 1:
            return [obj]
        out = [None] * self._world_size
        torch.distributed.gather_object(obj, out if self._rank == dst else None, dst=dst)
        return out if self._rank == dst else None

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ requests
    def _fit(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Drop the oldest context tokens so that both fit; an empty context becomes the prefix
        token (BOS). A continuation longer than max_length - 1 keeps its last tokens, scored after
        the one before them, as lm-eval's HF model scores what fits (with a warning)."""
        context = list(context) or [self.prefix_token_id]
        if len(continuation) >= self.max_length:
            keep = self.max_length - 1
            self._warn_once("long-continuation", f"a continuation of {len(continuation)} tokens does not fit the "
                            f"{self.max_length}-token context; only its last {keep} tokens are scored")
            context, continuation = (context + list(continuation))[-keep - 1: -keep], continuation[-keep:]
        return context[-(self.max_length - len(continuation)):], continuation

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        step = max(1, self.batch_size)
        bar = tqdm(total=len(requests), desc="llada loglikelihood", disable=disable_tqdm or self._rank != 0)
        for lo in range(0, len(requests), step):
            chunk = [self._fit(ctx, cont) for _, ctx, cont in requests[lo: lo + step]]
            scored = [pair for pair in chunk if pair[1]]  # an empty continuation has log p = 0, greedily
            estimates = iter(log_likelihoods(self.model, scored, mc_num=self.mc_num, batch_size=self.mc_batch_size,
                                             cfg_scale=self.cfg_scale, generator=self.generator) if scored else [])
            for ctx, cont in chunk:
                if not cont:
                    out.append((0.0, True))
                    continue
                greedy = is_greedy(self.model, ctx, cont) if self.greedy_check else False
                out.append((next(estimates).value, greedy))
            bar.update(len(chunk))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        window = self.max_length - 1 - self.rolling_context
        out = []
        for req in tqdm(requests, desc="llada rolling", disable=disable_tqdm or self._rank != 0):
            tokens = self.tok_encode(req.args[0])
            pairs = []
            for lo in range(0, len(tokens), window):
                ctx = [self.prefix_token_id] + tokens[max(0, lo - self.rolling_context): lo]
                pairs.append((ctx, tokens[lo: lo + window]))
            est = log_likelihoods(self.model, pairs, mc_num=self.mc_num, batch_size=self.mc_batch_size,
                                  generator=self.generator) if pairs else []
            out.append(sum(e.value for e in est))
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Requests with the same generation settings run `batch_size` at a time, prompts left padded
        (at temperature 0 the answers are those of one-at-a-time runs). A request for no tokens
        (max_gen_toks 0) is answered "" without sampling."""
        plans = [self._plan(req.args[1]) for req in requests]
        groups: dict[SamplerOptions, list[int]] = {}
        for i, (options, _, asked) in enumerate(plans):
            if asked > 0:
                groups.setdefault(options, []).append(i)
        out: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc="llada generate", disable=disable_tqdm or self._rank != 0)
        bar.update(len(requests) - sum(map(len, groups.values())))
        step = max(1, self.batch_size)
        for options, members in groups.items():  # (the answer is cut back to the length asked for below)
            for lo in range(0, len(members), step):
                chunk = members[lo: lo + step]
                x, mask = left_pad([self._prompt(requests[i].args[0], options) for i in chunk],
                                   self.model.config.roles.pad)
                res = sample(self.model, x, options, attention_mask=mask)  # noise from options.seed
                for row, i in enumerate(chunk):
                    asked = plans[i][2]  # blocks may have rounded gen_length up; never return more
                    text = decode_response(self.tokenizer, res.responses[row, :asked], self.stop_ids)
                    out[i] = text = cut_at_stop_texts(text, plans[i][1])[0]
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(chunk))
        bar.close()
        return out

    def _prompt(self, context: str, options: SamplerOptions) -> list[int]:
        """The context's tokens, the oldest dropped so that the answer fits (BOS for an empty one)."""
        ids, gen_length = self.tok_encode(context), options.gen_length
        room = options.usable_positions(self.max_length) - gen_length  # >= 1: _plan keeps the answer shorter
        if len(ids) > room:
            self._warn_once("long-context", f"contexts longer than {room} tokens lose their oldest tokens "
                            f"so that {gen_length} generated tokens fit the {self.max_length}-token context")
        return ids[-room:] or [self.prefix_token_id]

    def _plan(self, gen_kwargs: dict[str, Any] | None) -> tuple[SamplerOptions, list[str], int]:
        """Sampler options, stop strings and the tokens asked for, for one request's generation
        kwargs: max_gen_toks sets gen_length (blocks and steps fitted to it, so it may round up:
        the answer is cut back), temperature, top_k, top_p and do_sample as in transformers."""
        gen_kwargs = dict(gen_kwargs or {})
        until = self._stop_strings(gen_kwargs.pop("until", None))
        given = dict(self._given)
        temperature = gen_kwargs.pop("temperature", None)
        if temperature is not None:
            given["temperature"] = float(temperature)
        for name in ("top_k", "top_p"):  # as transformers reads them (top_k 0: no top-k)
            value = gen_kwargs.pop(name, None)
            if value is not None:
                given[name] = value
        do_sample = gen_kwargs.pop("do_sample", None)
        if do_sample is not None and not isinstance(do_sample, bool):  # typed: the string "false" is truthy
            raise UserError(f"do_sample must be true or false, got {do_sample!r}")
        if do_sample is False:  # as in transformers: greedy whatever the temperature
            given["temperature"] = 0.0
        max_gen = gen_kwargs.pop("max_gen_toks", None)
        ignored = sorted(set(gen_kwargs) - self._warned)
        if ignored:
            self._warned.update(ignored)
            print(f"llada: generation kwargs {', '.join(ignored)} have no meaning for this sampler and are ignored "
                  f"(it takes until, max_gen_toks, temperature, top_k, top_p, do_sample; the rest via --model_args)", file=sys.stderr)
        if max_gen is None:
            options = self._base.fitted(None, **given)
            return options, until, options.gen_length
        if int(max_gen) <= 0:  # nothing asked for: answered "" without sampling
            return self.options, until, 0
        options, asked = self._fit_length(int(max_gen), given)
        return options, until, asked

    def _fit_length(self, asked: int, given: dict[str, Any]) -> tuple[SamplerOptions, int]:
        """Options for an answer of `asked` tokens that leave at least one token of context, and
        the tokens asked for: more than max_length - 1 (block diffusion: the whole blocks of
        max_length, less one) gets that many (with a warning); where whole blocks would round past
        that, the answer is one block."""
        cap = self.options.usable_positions(self.max_length) - 1  # (a task changes no block)
        if asked > cap:
            self._warn_once("long-answer", f"max_gen_toks {asked} does not fit the {self.max_length}-token "
                            f"context; answers hold at most {cap} tokens")
            asked = cap
        options = self._base.fitted(asked, **given)
        if options.gen_length > cap:
            options = self._base.fitted(asked, **{**given, "block_length": None})
        return options, asked

    def _stop_strings(self, until: Any) -> list[str]:
        """lm-eval's `until` as a list of stop strings: a string or a list of them, empty ones
        dropped (they would stop every answer at once); anything else is read as one string, with a warning."""
        if until is None:
            return []
        if isinstance(until, str):
            until = [until]
        elif not isinstance(until, (list, tuple)):
            self._warn_once("until", f"until should be a string or a list of strings, got {until!r}; "
                            f"read as [{str(until)!r}]")
            until = [until]
        return [str(u) for u in until if u is not None and str(u) != ""]
