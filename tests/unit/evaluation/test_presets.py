"""The paper's evaluation presets: recorded settings, lm-eval arguments, argv rewriting, README table.

Expected values are written out from the reference repository (github.com/ML-GSAI/LLaDA):
eval_llada_lm_eval.sh, EVAL.md and opencompass/examples/llada_*_gen_*.py.
"""

from __future__ import annotations

import pytest
from conftest import ROOT

from llada.errors import UserError
from llada.evaluation.presets import (
    PRESETS,
    TASKS_DIR,
    TaskSetting,
    markdown_table,
    preset_argv,
    resolve,
    setting,
)

README = ROOT / "README.md"


def test_base_gsm8k_is_the_lm_eval_script_setting():
    # eval_llada_lm_eval.sh: gen_length=1024,steps=1024,block_length=1024, no chat, lm-eval's 5 shots
    args = resolve("llada-8b-base", "gsm8k")
    assert args.model_args == {"gen_length": 1024, "steps": 1024, "block_length": 1024, "cfg_scale": 0.0,
                               "logits_eos_inf": False, "confidence_eos_eot_inf": False}
    assert args.gen_kwargs == {"max_gen_toks": 1024, "temperature": 0.0}
    assert (args.num_fewshot, args.apply_chat_template, args.fewshot_as_multiturn) == (5, False, False)
    assert setting("llada-8b-base", "gsm8k").reported == 70.3


def test_base_likelihood_tasks_use_the_scripts_cfg_and_mc_num():
    # mmlu: 5-shot, cfg=0.0, mc_num=1; arc_challenge: 0-shot, cfg=0.5, mc_num=128; truthfulqa_mc2 cfg=2.0
    mmlu = resolve("llada-8b-base", "mmlu")
    assert mmlu.model_args == {"mc_num": 1, "cfg_scale": 0.0, "is_greedy_check": False}
    assert (mmlu.num_fewshot, mmlu.apply_chat_template, mmlu.gen_kwargs) == (5, False, {})
    assert setting("llada-8b-base", "mmlu").reported == 65.9
    arc = resolve("llada-8b-base", "arc_challenge")
    assert arc.model_args == {"mc_num": 128, "cfg_scale": 0.5, "is_greedy_check": False}
    assert arc.num_fewshot == 0
    assert setting("llada-8b-base", "arc_challenge").reported == 47.9  # EVAL.md w/ CFG; Table 1 45.9 w/o
    assert resolve("llada-8b-base", "truthfulqa_mc2").model_args["cfg_scale"] == 2.0
    assert resolve("llada-8b-base", "winogrande").num_fewshot == 5


def test_instruct_gsm8k_pure_diffusion_and_semi_autoregressive():
    # llada_instruct_gen_gsm8k_length512_block512_confidence.py -> 69.4; ..._length256_block8.py -> 78.6
    a = resolve("llada-8b-instruct", "gsm8k")
    assert a.model_args == {"gen_length": 512, "steps": 512, "block_length": 512, "cfg_scale": 0.0,
                            "logits_eos_inf": False, "confidence_eos_eot_inf": True}
    assert (a.num_fewshot, a.apply_chat_template, a.fewshot_as_multiturn) == (4, True, True)
    assert setting("llada-8b-instruct", "gsm8k").reported == 69.4
    b = resolve("llada-8b-instruct-semi-ar", "gsm8k")
    assert b.model_args == {"gen_length": 256, "steps": 256, "block_length": 8, "cfg_scale": 0.0,
                            "logits_eos_inf": False, "confidence_eos_eot_inf": False}
    assert b.gen_kwargs == {"max_gen_toks": 256, "temperature": 0.0}
    assert setting("llada-8b-instruct-semi-ar", "gsm8k").reported == 78.6


def test_instruct_math_humaneval_mmlu():
    m = resolve("llada-8b-instruct", "minerva_math")  # 512/512, confidence_eos_eot_inf, zero-shot -> 31.9
    assert (m.model_args["gen_length"], m.model_args["block_length"], m.model_args["confidence_eos_eot_inf"],
            m.num_fewshot) == (512, 512, True, 0)
    assert setting("llada-8b-instruct", "minerva_math").reported == 31.9
    m2 = resolve("llada-8b-instruct-semi-ar", "minerva_math")  # 512/64 -> 42.2
    assert (m2.model_args["gen_length"], m2.model_args["block_length"], m2.model_args["steps"]) == (512, 64, 512)
    assert setting("llada-8b-instruct-semi-ar", "minerva_math").reported == 42.2
    h = resolve("llada-8b-instruct", "humaneval_instruct")  # 512/512 with logits_eos_inf -> 49.4
    assert h.model_args == {"gen_length": 512, "steps": 512, "block_length": 512, "cfg_scale": 0.0,
                            "logits_eos_inf": True, "confidence_eos_eot_inf": False}
    assert (h.num_fewshot, h.apply_chat_template) == (0, True)
    assert setting("llada-8b-instruct", "humaneval_instruct").reported == 49.4
    mm = resolve("llada-8b-instruct", "mmlu_generative")  # gen_length 3, block 3, 5 shots -> 65.5
    assert (mm.model_args["gen_length"], mm.model_args["steps"], mm.model_args["block_length"]) == (3, 3, 3)
    assert (mm.num_fewshot, mm.fewshot_as_multiturn) == (5, True)
    assert setting("llada-8b-instruct", "mmlu_generative").reported == 65.5


def test_llada_1_5():
    g = resolve("llada-1.5", "gsm8k")  # llada_1p5_gen_gsm8k_length256_block16_confidence.py -> 83.8
    assert g.model_args == {"gen_length": 256, "steps": 256, "block_length": 16, "cfg_scale": 0.0,
                            "logits_eos_inf": False, "confidence_eos_eot_inf": True}
    assert setting("llada-1.5", "gsm8k").reported == 83.8
    m = resolve("llada-1.5", "minerva_math")  # 1024 / 128 -> 42.6
    assert (m.model_args["gen_length"], m.model_args["block_length"]) == (1024, 128)
    assert setting("llada-1.5", "minerva_math").reported == 42.6
    assert setting("llada-1.5", "humaneval_instruct").reported == 52.4
    gpqa = resolve("llada-1.5", "gpqa_diamond_generative_n_shot")  # both EOS flags off, examples in one message
    assert (gpqa.model_args["confidence_eos_eot_inf"], gpqa.fewshot_as_multiturn) == (False, False)


def test_reversal_poem_tasks_follow_eval_reverse_and_ship_with_the_package():
    a = resolve("llada-8b-instruct", "reversal_poem_reverse")
    assert a.model_args == {"gen_length": 28, "steps": 28, "block_length": 28, "cfg_scale": 0.0,
                            "logits_eos_inf": True, "confidence_eos_eot_inf": False}
    assert a.include_path == str(TASKS_DIR)
    assert (TASKS_DIR / "reversal_poem" / "reversal_poem_reverse.yaml").is_file()


@pytest.mark.parametrize("preset,task,expect", [
    ("llada-9b", "gsm8k", "unknown preset 'llada-9b'; choose one of: llada-8b-base, llada-8b-instruct"),
    ("llada-8b-base", "arc_easy", "preset llada-8b-base has no settings for task 'arc_easy'; it has: mmlu,"),
])
def test_bad_names_give_one_line_naming_what_is_allowed(preset, task, expect):
    with pytest.raises(UserError) as e:
        resolve(preset, task)
    assert str(e.value).startswith(expect) and "\n" not in str(e.value)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        TaskSetting(num_fewshot=0, gen_length=256, steps=20, block_length=8)
    with pytest.raises(ValueError, match="needs mc_num"):
        TaskSetting(num_fewshot=0)


def test_every_recorded_setting_names_its_source():
    for name, tasks in PRESETS.items():
        for task, s in tasks.items():
            assert s.source, (name, task)
            if s.kind == "generate":
                assert s.gen_length % s.block_length == 0 and s.steps % (s.gen_length // s.block_length) == 0


def test_argv_without_preset_is_unchanged():
    argv = ["--model", "llada", "--tasks", "gsm8k"]
    assert preset_argv(argv) == [argv]


def test_argv_instruct_gsm8k():
    argv = ["--model", "llada", "--model_args", "pretrained=GSAI-ML/LLaDA-8B-Instruct", "--preset",
            "llada-8b-instruct", "--tasks", "gsm8k", "--batch_size", "4"]
    assert preset_argv(argv) == [[
        "--model", "llada", "--batch_size", "4", "--tasks", "gsm8k",
        "--model_args", "pretrained=GSAI-ML/LLaDA-8B-Instruct,gen_length=512,steps=512,block_length=512,"
                        "cfg_scale=0.0,logits_eos_inf=False,confidence_eos_eot_inf=True",
        "--gen_kwargs", "max_gen_toks=512,temperature=0.0",
        "--num_fewshot", "4", "--apply_chat_template", "--fewshot_as_multiturn"]]


def test_argv_explicit_flags_win():
    argv = ["--model", "llada", "--model_args", "pretrained=D,block_length=32", "--preset=llada-1.5", "-t",
            "gsm8k", "-f", "0", "--gen_kwargs", "temperature=0.5"]
    assert preset_argv(argv) == [[
        "--model", "llada", "-f", "0", "--tasks", "gsm8k",
        "--model_args", "pretrained=D,block_length=32,gen_length=256,steps=256,cfg_scale=0.0,"
                        "logits_eos_inf=False,confidence_eos_eot_inf=True",
        "--gen_kwargs", "temperature=0.5,max_gen_toks=256",
        "--apply_chat_template", "--fewshot_as_multiturn"]]


def test_argv_groups_tasks_with_equal_settings_into_one_run():
    argv = ["run", "--model", "llada", "--model_args", "pretrained=B", "--preset", "llada-8b-base",
            "--tasks", "mmlu,arc_challenge", "cmmlu"]
    assert preset_argv(argv) == [
        ["run", "--model", "llada", "--tasks", "mmlu,cmmlu", "--model_args",
         "pretrained=B,mc_num=1,cfg_scale=0.0,is_greedy_check=False", "--num_fewshot", "5"],
        ["run", "--model", "llada", "--tasks", "arc_challenge", "--model_args",
         "pretrained=B,mc_num=128,cfg_scale=0.5,is_greedy_check=False", "--num_fewshot", "0"]]


def test_argv_poem_tasks_get_the_include_path_and_single_message_gpqa_says_so():
    runs = preset_argv(["--model", "llada", "--preset", "llada-8b-instruct", "--tasks",
                        "reversal_poem_forward,reversal_poem_reverse,gpqa_diamond_generative_n_shot"])
    assert len(runs) == 2
    assert runs[0][:2] == ["--model", "llada"] and runs[0][2:4] == ["--tasks",
                                                                   "reversal_poem_forward,reversal_poem_reverse"]
    assert runs[0][-2:] == ["--include_path", str(TASKS_DIR)]
    assert runs[1][-3:] == ["--apply_chat_template", "--fewshot_as_multiturn", "false"]


def test_argv_json_model_args_are_merged_as_json():
    runs = preset_argv(["--model_args", '{"pretrained": "D", "mc_num": 64}', "--preset", "llada-8b-base",
                        "--tasks", "piqa"])
    assert runs == [["--tasks", "piqa", "--model_args",
                     '{"pretrained": "D", "mc_num": 64, "cfg_scale": 0.5, "is_greedy_check": false}',
                     "--num_fewshot", "0"]]


@pytest.mark.parametrize("argv,expect", [
    (["--preset", "nope", "--tasks", "gsm8k"], "unknown preset 'nope'; choose one of: llada-8b-base,"),
    (["--preset", "llada-1.5"], "--preset llada-1.5 needs --tasks; it has settings for: gsm8k,"),
    (["--preset", "llada-1.5", "--tasks", "gsm8k,mmlu"], "preset llada-1.5 has no settings for task 'mmlu'"),
    (["--preset", "llada-1.5", "--preset", "llada-1.5", "--tasks", "gsm8k"], "give --preset once"),
])
def test_argv_errors_are_one_line(argv, expect):
    with pytest.raises(UserError) as e:
        preset_argv(argv)
    assert str(e.value).startswith(expect) and "\n" not in str(e.value)


def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


def test_readme_table_agrees_with_presets():
    text = README.read_text(encoding="utf-8")
    section = text.split("## The paper's evaluation settings", 1)[1].split("\n## ", 1)[0]
    readme, ours = _rows(section), _rows(markdown_table())
    assert len(readme) == len(ours) == 1 + sum(len(t) for t in PRESETS.values())
    for got, want in zip(readme, ours, strict=True):
        assert got[:-1] == want[:-1]  # every column but "ours", which a GPU run fills in
    assert text.index("## The paper's evaluation settings") < text.index("## File tree")


def test_rewritten_argv_parses_with_lm_evals_own_parser(monkeypatch):
    cli = pytest.importorskip("lm_eval._cli", reason="lm-eval's command line before 0.4.10 has no HarnessCLI")
    runs = preset_argv(["--model", "llada", "--model_args", "pretrained=D", "--preset", "llada-8b-instruct",
                        "--tasks", "gsm8k,gpqa_diamond_generative_n_shot"])
    parsed = []
    for run in runs:
        monkeypatch.setattr("sys.argv", ["lm-eval", *run])
        parsed.append(cli.HarnessCLI().parse_args())
    gsm8k, gpqa = parsed
    assert gsm8k.tasks == ["gsm8k"] and gsm8k.num_fewshot == 4
    assert gsm8k.model_args == {"pretrained": "D", "gen_length": 512, "steps": 512, "block_length": 512,
                                "cfg_scale": 0.0, "logits_eos_inf": False, "confidence_eos_eot_inf": True}
    assert gsm8k.gen_kwargs == {"max_gen_toks": 512, "temperature": 0.0}
    assert gsm8k.apply_chat_template is True and gsm8k.fewshot_as_multiturn is True
    assert gpqa.model_args["gen_length"] == 64 and gpqa.fewshot_as_multiturn is False


def test_llada_lm_eval_reports_a_bad_preset_in_one_line(capsys):
    pytest.importorskip("lm_eval")
    from llada.cli import main

    assert main(["lm-eval", "--model", "llada", "--preset", "llada-2", "--tasks", "gsm8k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("llada lm-eval: error: unknown preset 'llada-2'; choose one of: llada-8b-base, "
                   "llada-8b-instruct, llada-8b-instruct-semi-ar, llada-1.5")
