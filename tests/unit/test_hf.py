"""A model directory on transformers' side: `generate`, the text-generation pipeline,
generation_config.json, and the lowest transformers version pyproject.toml allows (slow)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import llada
from llada.config import preset
from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling import SamplerOptions, sample
from llada.tokenizer import config_ids, train_tokenizer

CORPUS = ["the cat sat on the mat", "a dog ran to the park and back", "where does the cat live?"] * 30


REPO = ROOT


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer) -> LLaDAModel:
    torch.manual_seed(0)
    return LLaDAModel(preset("debug", **config_ids(tokenizer))).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model, tokenizer) -> Path:
    root = tmp_path_factory.mktemp("hf") / "model"
    llada.save(root, model, tokenizer)
    return root


def _stop_padded(sequences: torch.Tensor, prompt_length: int, roles) -> torch.Tensor:
    """Reference for what generate returns: each answer's tokens after its first stop become pad."""
    out = sequences.clone()
    for row in out:
        stopped = False
        for j in range(prompt_length, row.shape[0]):
            if stopped:
                row[j] = roles.pad
            stopped = stopped or int(row[j]) in roles.stops
    return out


def _prompts(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer(["the cat", "where does the dog live?"], padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def _reference(model, ids, mask, options: SamplerOptions, new_tokens: int) -> torch.Tensor:
    out = sample(model, ids, options, attention_mask=mask).sequences[:, : ids.shape[1] + new_tokens]
    return _stop_padded(out, ids.shape[1], model.config.roles)


def test_generate_runs_llada_sample_with_sampler_options_as_keywords(model_dir, model, tokenizer):
    from transformers import AutoModel, AutoModelForCausalLM

    ids, mask = _prompts(tokenizer)
    assert mask[0, 0] == 0  # the saved tokenizer pads on the left
    expected = _reference(model, ids, mask, SamplerOptions(gen_length=16, steps=8, block_length=8,
                                                           remasking="margin"), 16)
    for auto in (AutoModelForCausalLM, AutoModel):
        hf = auto.from_pretrained(model_dir)
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=16, steps=8, block_length=8, remasking="margin")
        assert torch.equal(out, expected)
    again = hf.generate(ids, attention_mask=mask, max_new_tokens=16, steps=8, block_length=8, remasking="margin",
                        return_dict_in_generate=True)
    assert torch.equal(again.sequences, expected)
    # a length the blocks do not divide: sampled over whole blocks, cut back to what was asked
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=12, block_length=8)
    assert torch.equal(out, _reference(model, ids, mask, SamplerOptions().fitted(12, block_length=8), 12))
    # max_length counts the prompt, as in transformers
    out = hf.generate(ids, attention_mask=mask, max_length=ids.shape[1] + 8)
    assert torch.equal(out, _reference(model, ids, mask, SamplerOptions().fitted(8), 8))


def test_generate_pads_each_answer_after_its_first_stop():
    from llada.config import TokenRoles
    from llada.hf import pad_after_stop

    roles = TokenRoles(mask=9, eos=8, pad=7, bos=None, eot=6)
    seqs = torch.tensor([[1, 2, 3, 8, 4, 6, 5], [1, 2, 3, 4, 6, 8, 5], [1, 2, 3, 4, 5, 5, 5], [8, 2, 6, 4, 5, 8, 5]])
    assert torch.equal(pad_after_stop(seqs, 3, roles), _stop_padded(seqs, 3, roles))
    assert pad_after_stop(seqs, 3, roles)[3, :3].tolist() == [8, 2, 6]  # the prompt is left alone


def test_generation_config_json_holds_the_sampler_settings_and_is_honoured(tmp_path, model, tokenizer):
    from transformers import AutoModelForCausalLM, GenerationConfig

    options = SamplerOptions(gen_length=16, steps=8, block_length=8, remasking="random", temperature=0.5, seed=3)
    llada.save(tmp_path / "m", model, tokenizer, options=options)
    saved = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    roles = model.config.roles
    assert saved["mask_token_id"] == roles.mask and saved["eos_token_id"] == [roles.eos, roles.eot]
    assert (saved["pad_token_id"], saved["bos_token_id"]) == (roles.pad, roles.bos)
    assert (saved["max_new_tokens"], saved["do_sample"], saved["temperature"]) == (16, True, 0.5)
    assert (saved["steps"], saved["block_length"], saved["remasking"], saved["seed"]) == (8, 8, "random", 3)
    assert GenerationConfig.from_pretrained(tmp_path / "m").block_length == 8  # transformers keeps our keys
    bundle = llada.load(tmp_path / "m")
    assert bundle.options == options  # read back
    bundle.save(tmp_path / "again")
    assert llada.load(tmp_path / "again").options == options  # and kept by a re-save

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    ids, mask = _prompts(tokenizer)
    assert torch.equal(hf.generate(ids, attention_mask=mask), _reference(model, ids, mask, options, 16))
    greedy = options.replace(temperature=0.0)
    assert torch.equal(hf.generate(ids, attention_mask=mask, do_sample=False),
                       _reference(model, ids, mask, greedy, 16))
    assert torch.equal(hf.generate(ids, attention_mask=mask, temperature=0.9, seed=5),
                       _reference(model, ids, mask, options.replace(temperature=0.9, seed=5), 16))
    assert torch.equal(hf.generate(ids, attention_mask=mask, max_new_tokens=8),
                       _reference(model, ids, mask, options.fitted(8), 8))


def test_default_generation_config_is_sampler_defaults(model_dir):
    data = json.loads((model_dir / "generation_config.json").read_text())
    defaults = SamplerOptions()
    assert data["max_new_tokens"] == defaults.gen_length and data["do_sample"] is False
    assert {k: data[k] for k in ("steps", "block_length", "remasking", "cfg_scale", "threshold", "cache")} == \
        {k: getattr(defaults, k) for k in ("steps", "block_length", "remasking", "cfg_scale", "threshold", "cache")}
    assert llada.load(model_dir).options == defaults


def test_generate_refuses_what_it_cannot_honour(model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    ids, mask = _prompts(tokenizer)
    with pytest.raises(GenerationError, match="num_beams must be 1"):
        hf.generate(ids, num_beams=2)
    with pytest.raises(GenerationError, match="repetition_penalty, which this sampler does not use"):
        hf.generate(ids, repetition_penalty=1.2, max_new_tokens=8)
    with pytest.raises(GenerationError, match="max_length 3 leaves no room"):
        hf.generate(ids, max_length=3)
    with pytest.raises(GenerationError, match="remasking"):
        hf.generate(ids, max_new_tokens=8, remasking="sideways")
    # an empty prompt starts from BOS, as transformers does
    out = hf.generate(None, max_new_tokens=8)
    assert out.shape == (1, 9) and out[0, 0] == hf.model.config.roles.bos


def test_text_generation_pipeline_plain_and_chat(model_dir, model, tokenizer):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(model_dir))
    options = SamplerOptions().fitted(8)  # the directory's settings, 8 tokens
    out = pipe("the cat", max_new_tokens=8)
    ids = tokenizer("the cat", return_tensors="pt")["input_ids"]
    answer = _reference(model, ids, None, options, 8)[0, ids.shape[1]:]
    assert out == [{"generated_text": "the cat" + tokenizer.decode(answer, skip_special_tokens=True)}]

    messages = [{"role": "user", "content": "where does the cat live?"}]
    out = pipe(messages, max_new_tokens=8)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    answer = _reference(model, ids, None, options, 8)[0, ids.shape[1]:]
    reply = out[0]["generated_text"]
    assert reply[:-1] == messages and reply[-1]["role"] == "assistant"
    assert reply[-1]["content"] == tokenizer.decode(answer, skip_special_tokens=True)


_CHECK_IN_OLD_TRANSFORMERS = """
import json, sys
import torch, transformers
import llada
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

root, prompt = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(root)
bundle = llada.load(root)
ids = tok(prompt, return_tensors="pt")["input_ids"]
hf = AutoModelForCausalLM.from_pretrained(root)
chat = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
print(json.dumps({
    "version": transformers.__version__, "class": type(tok).__name__, "padding_side": tok.padding_side,
    "model_max_length": tok.model_max_length, "chat": chat, "ids": ids.tolist(),
    "special": [tok.mask_token_id, tok.eos_token_id, tok.pad_token_id, tok.bos_token_id],
    "generated": hf.generate(ids, max_new_tokens=8).tolist(),
    "pipeline": pipeline("text-generation", model=root)(prompt, max_new_tokens=8)[0]["generated_text"],
    "options": bundle.options.to_dict(),
}))
"""


def _lowest_allowed_transformers() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'"transformers>=([0-9.]+)', text)[1]


@pytest.mark.slow
def test_a_saved_directory_opens_in_the_lowest_allowed_transformers(tmp_path, model_dir, model, tokenizer):
    """Install the lowest transformers that pyproject.toml allows into a throwaway venv (it needs the
    package index; about a minute) and open a directory saved here under the installed 5.x: its
    tokenizer, llada.load, AutoModelForCausalLM.generate and the text-generation pipeline.
    Run it with `pytest -m slow tests/unit/test_hf.py`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    lowest = _lowest_allowed_transformers()
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", f"transformers=={lowest}"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # torch and the rest come from this environment, after the venv's own packages (its transformers
    # and tokenizers win); written after pip ran, so that pip never sees this environment's packages
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_llada_test.pth").write_text(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    prompt = "where does the cat live?"
    run = subprocess.run([str(python), "-c", _CHECK_IN_OLD_TRANSFORMERS, str(model_dir), prompt],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    old = json.loads(run.stdout.strip().splitlines()[-1])
    assert old["version"].startswith(lowest)
    assert old["class"] == "PreTrainedTokenizerFast" and old["padding_side"] == "left"
    assert old["model_max_length"] == model.config.max_sequence_length
    assert old["chat"] == tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                        add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert old["ids"] == ids.tolist()
    assert old["special"] == [tokenizer.mask_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                              tokenizer.bos_token_id]
    expected = _reference(model, ids, None, SamplerOptions().fitted(8), 8)
    assert old["generated"] == expected.tolist()
    answer = tokenizer.decode(expected[0, ids.shape[1]:], skip_special_tokens=True)
    assert old["pipeline"] == prompt + answer
    assert old["options"] == SamplerOptions().to_dict()


def test_readme_transformers_example_runs_as_written(model_dir, tmp_path, monkeypatch):
    """The README's "With transformers" block, on a tiny model directory in place of the quickstart's."""
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## With transformers", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "runs/quickstart/sft/model" in code
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(a))
    exec(compile(code.replace("runs/quickstart/sft/model", str(model_dir)), "README.md", "exec"), {})
    assert len(printed) == 2 and isinstance(printed[0][0], str) and printed[1][0]["role"] == "assistant"
