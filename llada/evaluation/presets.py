"""The paper's evaluation settings as named presets for `llada lm-eval --preset NAME --tasks ...`.

    llada lm-eval --model llada --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct \\
        --preset llada-8b-instruct --tasks gsm8k

A preset maps lm-eval task names to the settings LLaDA's evaluation guide runs them with:
gen_length, steps, block_length (generation), mc_num and cfg_scale (likelihood, Eq. 6), the
few-shot count, the chat template and the two EOS rules of App. B.4 (`logits_eos_inf`: EOS is
never predicted; `confidence_eos_eot_inf`: an EOS/EOT prediction is unmasked last). `resolve`
turns one (preset, task) into lm-eval arguments and `preset_argv` rewrites a `llada lm-eval`
command line; flags the user gives explicitly (a --model_args or --gen_kwargs key, --num_fewshot,
--apply_chat_template, --fewshot_as_multiturn, --include_path) win over the preset's.

Sources (github.com/ML-GSAI/LLaDA, read at commit b7e6c35):
- llada-8b-base: `eval_llada_lm_eval.sh` (lm-eval commands: cfg, mc_num, few-shot, gen_length,
  steps, block_length) and `EVAL.md` (the numbers those commands give). Where the script passes no
  --num_fewshot, the count is lm-eval's default for the task, written out here so that a change of
  default in lm-eval does not change the run.
- llada-8b-instruct, llada-8b-instruct-semi-ar, llada-1.5: `EVAL.md` (the settings and numbers
  tables) and `opencompass/examples/llada_*_gen_*.py` (gen_length, steps, block size, EOS flags);
  few-shot counts and chat form from the OpenCompass dataset configs those examples import
  (`opencompass/opencompass/configs/datasets/...`); the model wrapper
  `opencompass/opencompass/models/dllm.py` applies the chat template to every Instruct / 1.5
  prompt and samples at temperature 0.
- the reversal-poem tasks: `eval_reverse.py` and the commands in `EVAL.md` ("Reversal curse").

The Instruct and 1.5 numbers come from OpenCompass prompts; lm-eval's prompts for the same
benchmark differ in wording (and lm-eval's few-shot examples are its own), so expect the "ours"
column to land near, not on, the reported figure. Instruct ARC-C, HellaSwag and IFEval are left out:
lm-eval's stock ARC-C and HellaSwag are likelihood tasks, not the generative form the paper used,
and the repository reports no Instruct IFEval number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llada.errors import UserError

TASKS_DIR = Path(__file__).parent / "tasks"  # task YAMLs shipped with the package (--include_path)


@dataclass(frozen=True)
class TaskSetting:
    """How the paper evaluates one task: either generation (gen_length set) or likelihood (mc_num set)."""

    num_fewshot: int  # in-context examples
    apply_chat_template: bool = False  # render the prompt with the model's chat template
    fewshot_as_multiturn: bool = False  # with the chat template: each example its own user/assistant turn
    gen_length: int | None = None  # tokens generated (generation tasks)
    steps: int | None = None  # denoising steps over the whole gen_length
    block_length: int | None = None  # semi-autoregressive block; == gen_length is pure diffusion
    cfg_scale: float = 0.0  # unsupervised classifier-free guidance
    mc_num: int | None = None  # Monte-Carlo samples per Eq. 6 estimate (likelihood tasks)
    logits_eos_inf: bool = False  # EOS logit set to -inf: never generated (App. B.4)
    confidence_eos_eot_inf: bool = False  # EOS/EOT get -inf confidence: unmasked last (App. B.4)
    reported: float | None = None  # the repository's number for exactly these settings
    source: str = ""  # repository file(s) the settings and the number come from
    note: str = ""  # where the paper's table or a reproduction shows another number
    packaged: bool = False  # the task's YAML ships in llada/evaluation/tasks (needs --include_path)

    def __post_init__(self) -> None:
        gen = (self.gen_length, self.steps, self.block_length)
        if any(v is not None for v in gen) and any(v is None for v in gen):
            raise ValueError("gen_length, steps and block_length are given together or not at all")
        if self.gen_length is not None:
            if self.gen_length % self.block_length or self.steps % (self.gen_length // self.block_length):
                raise ValueError(f"gen_length {self.gen_length} must be whole blocks of {self.block_length} and "
                                 f"steps {self.steps} a multiple of the number of blocks")
            if self.mc_num is not None:
                raise ValueError("mc_num is for likelihood tasks; this one generates")
        elif self.mc_num is None:
            raise ValueError("a likelihood task needs mc_num")

    @property
    def kind(self) -> str:
        """"generate" (lm-eval generate_until) or "likelihood" (loglikelihood / multiple choice)."""
        return "likelihood" if self.gen_length is None else "generate"


def _base_ll(num_fewshot: int, cfg_scale: float, mc_num: int, reported: float, note: str = "") -> TaskSetting:
    return TaskSetting(num_fewshot=num_fewshot, cfg_scale=cfg_scale, mc_num=mc_num, reported=reported,
                       source="eval_llada_lm_eval.sh; EVAL.md (lm-eval ppl table)", note=note)


def _base_gen(num_fewshot: int, reported: float) -> TaskSetting:
    return TaskSetting(num_fewshot=num_fewshot, gen_length=1024, steps=1024, block_length=1024, reported=reported,
                       source="eval_llada_lm_eval.sh; EVAL.md (lm-eval gen table, 1024 row = Table 1)")


def _chat(num_fewshot: int, gen_length: int, block_length: int, reported: float | None, source: str, *,
          multiturn: bool = True, **extra: Any) -> TaskSetting:
    """An Instruct / 1.5 setting: chat template, steps = gen_length (every OpenCompass example sets
    gen_steps equal to gen_length), temperature 0, no CFG; `extra` are further TaskSetting fields
    (logits_eos_inf, confidence_eos_eot_inf, note, packaged)."""
    return TaskSetting(num_fewshot=num_fewshot, apply_chat_template=True,
                       fewshot_as_multiturn=multiturn and num_fewshot > 0, gen_length=gen_length,
                       steps=gen_length, block_length=block_length, reported=reported, source=source, **extra)


_EX = "opencompass/examples/"  # the OpenCompass example configs of the repository

# name -> {lm-eval task -> setting}
PRESETS: dict[str, dict[str, TaskSetting]] = {
    # LLaDA-8B-Base, Table 1. Likelihood tasks: the cfg_scale, mc_num and few-shot count of each
    # command in eval_llada_lm_eval.sh (is_check_greedy=False there: is_greedy_check=False here);
    # the number is EVAL.md's for those settings ("w/ CFG" row where cfg_scale > 0; Table 1 itself
    # shows the "w/o CFG" row, named in the note). Generation tasks: gen_length = steps =
    # block_length = 1024 as in the script; EVAL.md says Table 1 reports this setting.
    "llada-8b-base": {
        "mmlu": _base_ll(5, 0.0, 1, 65.9),
        "cmmlu": _base_ll(5, 0.0, 1, 69.9),
        "ceval-valid": _base_ll(5, 0.0, 1, 70.5),
        "arc_challenge": _base_ll(0, 0.5, 128, 47.9, "Table 1, w/o CFG: 45.9"),
        "hellaswag": _base_ll(0, 0.5, 128, 72.5, "Table 1, w/o CFG: 70.5"),
        "truthfulqa_mc2": _base_ll(0, 2.0, 128, 46.4, "Table 1, w/o CFG: 46.1"),
        "winogrande": _base_ll(5, 0.0, 128, 74.8),
        "piqa": _base_ll(0, 0.5, 128, 74.4, "Table 1, w/o CFG: 73.6"),
        "gpqa_main_n_shot": _base_ll(5, 0.5, 128, 26.1, "Table 1, w/o CFG: 25.2"),
        # few-shot: the script passes none; lm-eval's defaults (bbh 3, gsm8k 5, minerva_math 4, humaneval 0, mbpp 3)
        "bbh": _base_gen(3, 49.7),
        "gsm8k": _base_gen(5, 70.3),
        "minerva_math": _base_gen(4, 31.4),
        "humaneval": _base_gen(0, 35.4),
        "mbpp": _base_gen(3, 40.0),
    },
    # LLaDA-8B-Instruct, Tables 1-2: pure diffusion (block_length = gen_length), EVAL.md's first
    # Instruct table ("Internal toolkit" row = the paper; the OpenCompass reproduction in the note).
    "llada-8b-instruct": {
        # gsm8k_gen -> gsm8k_gen_1d7fe4: 4 worked examples as chat turns
        "gsm8k": _chat(4, 512, 512, 69.4, _EX + "llada_instruct_gen_gsm8k_length512_block512_confidence.py; EVAL.md",
                       confidence_eos_eot_inf=True, note="OpenCompass: 68.8"),
        # math_0shot_gen_11c4b5: zero-shot, answer in \boxed{}
        "minerva_math": _chat(0, 512, 512, 31.9, _EX + "llada_instruct_gen_math_length512_block512_confidence.py; "
                              "EVAL.md", confidence_eos_eot_inf=True, note="OpenCompass: 29.6"),
        # humaneval_gen_8e312c: zero-shot chat prompt
        "humaneval_instruct": _chat(0, 512, 512, 49.4, _EX + "llada_instruct_gen_humaneval_length512_block512_logits.py; "
                                    "EVAL.md", logits_eos_inf=True, note="OpenCompass: 47.0"),
        # mbpp_gen -> mbpp_gen_830460: 3 examples as chat turns
        "mbpp_instruct": _chat(3, 256, 256, 41.0, _EX + "llada_instruct_gen_mbpp_length256_block256_confidence.py; "
                               "EVAL.md", confidence_eos_eot_inf=True, note="OpenCompass: 39.6"),
        # mmlu_gen_a484b3: 5 fixed dev examples as chat turns, answer letter generated in 3 tokens
        "mmlu_generative": _chat(5, 3, 3, 65.5, _EX + "llada_instruct_gen_mmlu_length3_block3.py; EVAL.md",
                                 note="OpenCompass: 65.4"),
        # mmlu_pro_gen -> mmlu_pro_0shot_cot_gen_08c1de: zero-shot chain of thought
        "mmlu_pro": _chat(0, 256, 256, 37.0, _EX + "llada_instruct_gen_mmlupro_length256_block256.py; EVAL.md",
                          note="OpenCompass: 36.6"),
        # gpqa_fewshot_gen: the diamond split, 5 examples inside one user message
        "gpqa_diamond_generative_n_shot": _chat(5, 64, 64, 33.3, _EX + "llada_instruct_gen_gpqa_length64_block64_"
                                                "confidence.py; EVAL.md", multiturn=False,
                                                confidence_eos_eot_inf=True, note="OpenCompass: 32.3"),
        # Table 4 (reversal curse): eval_reverse.py defaults (gen_length = block_length = steps = 28,
        # cfg 0, chat template) with --eos_inf as EVAL.md runs it. The repository states no accuracy.
        "reversal_poem_forward": _chat(0, 28, 28, None, "eval_reverse.py; EVAL.md (Reversal curse)",
                                       logits_eos_inf=True, packaged=True),
        "reversal_poem_reverse": _chat(0, 28, 28, None, "eval_reverse.py; EVAL.md (Reversal curse)",
                                       logits_eos_inf=True, packaged=True),
    },
    # LLaDA-8B-Instruct with block diffusion (semi-autoregressive remasking): EVAL.md's second
    # Instruct table, better on GSM8K and MATH only. Both EOS flags off there.
    "llada-8b-instruct-semi-ar": {
        "gsm8k": _chat(4, 256, 8, 78.6, _EX + "llada_instruct_gen_gsm8k_length256_block8.py; EVAL.md",
                       note="OpenCompass: 78.9"),
        "minerva_math": _chat(0, 512, 64, 42.2, _EX + "llada_instruct_gen_math_length512_block64.py; EVAL.md",
                              note="OpenCompass: 42.7"),
    },
    # LLaDA 1.5 (GSAI-ML/LLaDA-1.5): EVAL.md's LLaDA 1.5 table and the llada_1p5_* examples.
    "llada-1.5": {
        "gsm8k": _chat(4, 256, 16, 83.8, _EX + "llada_1p5_gen_gsm8k_length256_block16_confidence.py; EVAL.md",
                       confidence_eos_eot_inf=True, note="OpenCompass: 83.6"),
        "minerva_math": _chat(0, 1024, 128, 42.6, _EX + "llada_1p5_gen_math_length1024_block128_confidence.py; "
                              "EVAL.md", confidence_eos_eot_inf=True, note="OpenCompass: 42.3"),
        "gpqa_diamond_generative_n_shot": _chat(5, 256, 16, 36.9, _EX + "llada_1p5_gen_gpqa_length256_block16.py; "
                                                "EVAL.md", multiturn=False, note="OpenCompass: 34.8"),
        "humaneval_instruct": _chat(0, 512, 32, 52.4, _EX + "llada_1p5_gen_humaneval_length512_block32_confidence.py; "
                                    "EVAL.md", confidence_eos_eot_inf=True, note="OpenCompass: 51.2"),
        "mbpp_instruct": _chat(3, 512, 32, 42.8, _EX + "llada_1p5_gen_mbpp_length512_block32_confidence.py; EVAL.md",
                               confidence_eos_eot_inf=True, note="OpenCompass: 42.6"),
        # IFEval_gen -> IFEval_gen_353ae7: zero-shot
        "ifeval": _chat(0, 256, 16, 66.2, _EX + "llada_1p5_gen_ifeval_length256_block16_confidence.py; EVAL.md",
                        confidence_eos_eot_inf=True, note="OpenCompass: 65.2"),
    },
}

# the Hugging Face checkpoint each preset is meant for (README examples)
CHECKPOINTS = {"llada-8b-base": "GSAI-ML/LLaDA-8B-Base", "llada-8b-instruct": "GSAI-ML/LLaDA-8B-Instruct",
               "llada-8b-instruct-semi-ar": "GSAI-ML/LLaDA-8B-Instruct", "llada-1.5": "GSAI-ML/LLaDA-1.5"}


@dataclass(frozen=True)
class LmEvalArgs:
    """One (preset, task) as lm-eval arguments."""

    model_args: dict[str, Any]  # keys the `llada` lm-eval model accepts (SAMPLER_KEYS, mc_num, cfg_scale, ...)
    num_fewshot: int
    apply_chat_template: bool
    fewshot_as_multiturn: bool
    gen_kwargs: dict[str, Any] = field(default_factory=dict)  # task generation kwargs overridden
    include_path: str | None = None  # the package's task directory, for tasks shipped with llada

    def key(self) -> tuple:
        """Hashable identity: tasks with equal keys can share one lm-eval run."""
        return (tuple(sorted(self.model_args.items())), self.num_fewshot, self.apply_chat_template,
                self.fewshot_as_multiturn, tuple(sorted(self.gen_kwargs.items())), self.include_path)


def setting(preset: str, task: str) -> TaskSetting:
    """The recorded setting; UserError naming the allowed presets / the preset's tasks."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    tasks = PRESETS[preset]
    if task not in tasks:
        raise UserError(f"preset {preset} has no settings for task {task!r}; it has: {', '.join(tasks)}")
    return tasks[task]


def resolve(preset: str, task: str) -> LmEvalArgs:
    """lm-eval arguments for `task` under `preset`.

    Generation: model_args gen_length, steps, block_length, cfg_scale and the two EOS flags, and
    gen_kwargs max_gen_toks = gen_length (the `llada` model takes a task's max_gen_toks as the
    gen_length, so the task's own value must not win) and temperature 0 (the reference decodes
    greedily). Likelihood: model_args mc_num, cfg_scale and is_greedy_check=False (the reference's
    is_check_greedy=False). Raises UserError for an unknown preset or a task it has no settings for.
    """
    s = setting(preset, task)
    if s.kind == "generate":
        model_args: dict[str, Any] = {"gen_length": s.gen_length, "steps": s.steps, "block_length": s.block_length,
                                      "cfg_scale": s.cfg_scale, "logits_eos_inf": s.logits_eos_inf,
                                      "confidence_eos_eot_inf": s.confidence_eos_eot_inf}
        gen_kwargs: dict[str, Any] = {"max_gen_toks": s.gen_length, "temperature": 0.0}
    else:
        model_args = {"mc_num": s.mc_num, "cfg_scale": s.cfg_scale, "is_greedy_check": False}
        gen_kwargs = {}
    return LmEvalArgs(model_args=model_args, num_fewshot=s.num_fewshot, apply_chat_template=s.apply_chat_template,
                      fewshot_as_multiturn=s.fewshot_as_multiturn, gen_kwargs=gen_kwargs,
                      include_path=str(TASKS_DIR) if s.packaged else None)


# ------------------------------------------------------------------------------ argv rewriting

_ALIASES = {"-t": "--tasks", "-a": "--model_args", "-f": "--num_fewshot"}  # lm-eval's short forms


def _options(argv: list[str]) -> tuple[list[str], list[tuple[str, list[str], list[str]]]]:
    """Split argv into leading positionals (e.g. lm-eval's `run`) and options: (flag, values, tokens)."""
    head: list[str] = []
    opts: list[tuple[str, list[str], list[str]]] = []
    for tok in argv:
        if tok.startswith("-") and len(tok) > 1:
            flag, eq, inline = tok.partition("=")
            opts.append((_ALIASES.get(flag, flag), [inline] if eq else [], [tok]))
        elif opts:
            opts[-1][1].append(tok)
            opts[-1][2].append(tok)
        else:
            head.append(tok)
    return head, opts


def _split_top_level(text: str) -> list[str]:
    """`k=v,k2=[1,2]` -> ["k=v", "k2=[1,2]"]: commas inside brackets or quotes do not split."""
    parts, buf, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return [p for p in parts if p.strip()]


def _format(value: Any) -> str:
    return str(value)  # True/False, 0.5, 1024: what lm-eval's key=value parser reads back


def _merge_kv(user_values: list[str], preset: dict[str, Any]) -> str | None:
    """One lm-eval key=value (or JSON) argument: the user's items, then the preset's keys the user did not give."""
    pairs: list[str] = []
    as_json: dict[str, Any] = {}
    for v in user_values:
        if v.lstrip().startswith("{"):
            try:
                as_json.update(json.loads(v))
            except json.JSONDecodeError as e:
                raise UserError(f"--model_args / --gen_kwargs value {v!r} is not valid JSON ({e.msg})") from None
        else:
            pairs += _split_top_level(v)
    given = {p.split("=", 1)[0].strip() for p in pairs} | set(as_json)
    extra = {k: v for k, v in preset.items() if k not in given}
    if as_json:
        for p in pairs:
            k, _, v = p.partition("=")
            as_json[k.strip()] = v
        return json.dumps({**as_json, **extra})
    items = pairs + [f"{k}={_format(v)}" for k, v in extra.items()]
    return ",".join(items) if items else None


def preset_argv(argv: list[str]) -> list[list[str]]:
    """`llada lm-eval` arguments with `--preset NAME` turned into lm-eval's own flags.

    Returns one argv per lm-eval run: tasks of --tasks whose settings are equal share a run (in
    the order first named); tasks needing different settings run one after another, since
    model_args fix the sampler when the model is built. Without --preset, [argv] unchanged.

    Explicit flags win: a key the user gives in --model_args or --gen_kwargs keeps the user's
    value (the preset fills in the other keys), and a user's --num_fewshot, --apply_chat_template,
    --fewshot_as_multiturn or --include_path replaces the preset's choice. Raises UserError for an
    unknown preset, a missing --tasks, or a task the preset has no settings for.
    """
    head, opts = _options(argv)
    presets = [o for o in opts if o[0] == "--preset"]
    if not presets:
        return [list(argv)]
    if len(presets) > 1 or len(presets[0][1]) != 1:
        raise UserError(f"give --preset once, with one name: {', '.join(PRESETS)}")
    name = presets[0][1][0]
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    tasks = [t for o in opts if o[0] == "--tasks" for v in o[1] for t in v.split(",") if t]
    if not tasks:
        raise UserError(f"--preset {name} needs --tasks; it has settings for: {', '.join(PRESETS[name])}")
    groups: dict[tuple, tuple[LmEvalArgs, list[str]]] = {}
    for task in dict.fromkeys(tasks):
        args = resolve(name, task)
        groups.setdefault(args.key(), (args, []))[1].append(task)

    user = {o[0] for o in opts}
    model_values = [v for o in opts if o[0] == "--model_args" for v in o[1]]
    gen_values = [v for o in opts if o[0] == "--gen_kwargs" for v in o[1]]
    kept = [tok for o in opts if o[0] not in ("--preset", "--tasks", "--model_args", "--gen_kwargs") for tok in o[2]]
    runs = []
    for args, group in groups.values():
        run = head + kept + ["--tasks", ",".join(group)]
        model_args = _merge_kv(model_values, args.model_args)
        if model_args is not None:
            run += ["--model_args", model_args]
        gen_kwargs = _merge_kv(gen_values, args.gen_kwargs)
        if gen_kwargs is not None:
            run += ["--gen_kwargs", gen_kwargs]
        if "--num_fewshot" not in user:
            run += ["--num_fewshot", str(args.num_fewshot)]
        if args.apply_chat_template and "--apply_chat_template" not in user:
            run.append("--apply_chat_template")
            if "--fewshot_as_multiturn" not in user and args.num_fewshot > 0:
                # lm-eval turns multi-turn few-shot on with the chat template; say it either way
                run += ["--fewshot_as_multiturn"] if args.fewshot_as_multiturn else ["--fewshot_as_multiturn", "false"]
        if args.include_path is not None and "--include_path" not in user:
            run += ["--include_path", args.include_path]
        runs.append(run)
    return runs


PRESET_HELP = (
    "llada lm-eval also takes --preset NAME (" + ", ".join(PRESETS) + "): the paper's settings for each task in "
    "--tasks (gen_length, steps, block_length, cfg_scale, mc_num, few-shot, chat template, EOS flags); "
    "flags given explicitly win over the preset's. See llada/evaluation/presets.py.\n")


# ------------------------------------------------------------------------------ README table

def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:g}" if isinstance(v, float) else str(v)


def markdown_table() -> str:
    """The README table: one row per (preset, task), settings, the reported number, and "ours" (—)."""
    rows = ["| preset | task | shots | chat | gen_length | steps | block_length | cfg_scale | mc_num | EOS rule "
            "| reported | ours |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, tasks in PRESETS.items():
        for task, s in tasks.items():
            eos = ("logits_eos_inf" if s.logits_eos_inf else "") + \
                  ("confidence_eos_eot_inf" if s.confidence_eos_eot_inf else "")
            chat = _fmt(s.apply_chat_template) + (" (turns)" if s.fewshot_as_multiturn else "")
            reported = ("—" if s.reported is None else f"{s.reported:.1f}") + (f" ({s.note})" if s.note else "")
            rows.append(f"| {name} | {task} | {s.num_fewshot} | {chat} | {_fmt(s.gen_length)} | {_fmt(s.steps)} "
                        f"| {_fmt(s.block_length)} | {_fmt(s.cfg_scale)} | {_fmt(s.mc_num)} | {eos or '—'} "
                        f"| {reported} | — |")
    return "\n".join(rows) + "\n"
