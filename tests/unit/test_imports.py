"""`import llada` and `llada --help` stay light; the lazy names and the Auto-class registration still work.

Each check runs in a fresh interpreter: this one has torch and transformers loaded already.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from conftest import ROOT

HEAVY = ["torch", "transformers", "datasets", "accelerate", "fastapi", "lm_eval"]


# What the package's import graph must not hold. Each rule: no module under one of the `importers`
# prefixes (except those under `exempt`) imports one under the `imported` prefixes. The graph is
# tools/code_shape.py's: every import statement, at the top, inside a function or type-only.
FORBIDDEN_IMPORTS = [
    # (importers, imported, exempt, why)
    (("llada.config",), ("llada.families",), (), "the neutral ModelConfig knows no family"),
    (("llada",), ("llada.commands", "llada.cli"), ("llada.commands", "llada.cli", "llada.__main__"),
     "the library knows nothing of the commands that use it"),
]


# Modules (and packages) that no import circle may pass through.
CIRCLE_FREE = ("llada",)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", code] if code else [sys.executable, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def loaded_heavy_modules(code: str) -> list[str]:
    """The heavy top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    out = run_python(probe)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_llada_loads_no_heavy_packages():
    assert loaded_heavy_modules("import llada") == []


def test_lazy_names_resolve_and_are_listed():
    code = """
import llada
assert set(llada.__all__) <= set(dir(llada)), dir(llada)
from llada import Bundle, LLaDAModel, ModelConfig, load, preset, save
import llada.checkpoint, llada.config, llada.model
assert (llada.load, llada.save, llada.Bundle) == (llada.checkpoint.load, llada.checkpoint.save, llada.checkpoint.Bundle)
assert (llada.ModelConfig, llada.preset, llada.LLaDAModel) == (llada.config.ModelConfig, llada.config.preset, llada.model.LLaDAModel)
import llada.sampling
assert (llada.sample, llada.sample_steps, llada.SamplerOptions) == (llada.sampling.sample, llada.sampling.sample_steps, llada.sampling.SamplerOptions)
try:
    llada.no_such_name
except AttributeError as e:
    assert "no_such_name" in str(e)
else:
    raise AssertionError("llada.no_such_name resolved")
print("ok")
"""
    out = run_python(code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_help_prints_usage_without_heavy_imports():
    out = run_python("", "-m", "llada", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: llada <command>") and "quickstart" in out.stdout
    code = "from llada.cli import main\nassert main(['--help']) == 0\nassert main(['no-such-command', '--help']) == 2"
    assert loaded_heavy_modules(code) == []


def test_auto_model_opens_a_saved_directory_after_import_llada(tmp_path):
    """The README's promise, in a process that only does `import llada` and then uses transformers.

    A `find_spec("transformers")` probe (as accelerate, peft and lm-eval do) must not use up the
    registration hook before the real import.
    """
    import torch

    import llada
    from llada.config import preset

    model = llada.LLaDAModel(preset("debug", vocab_size=64, mask_token_id=63, eos_token_id=62, pad_token_id=62,
                                    bos_token_id=61, eot_token_id=60))
    llada.save(tmp_path / "m", model)
    ids = torch.randint(0, 60, (1, 6))
    torch.save({"ids": ids, "logits": model(ids).detach()}, tmp_path / "expected.pt")
    code = f"""
import importlib.util, torch, llada
assert importlib.util.find_spec("transformers") is not None
from transformers import AutoModel, AutoModelForCausalLM
want = torch.load({str(tmp_path / "expected.pt")!r})
for auto in (AutoModel, AutoModelForCausalLM):
    got = auto.from_pretrained({str(tmp_path / "m")!r})(want["ids"]).logits
    torch.testing.assert_close(got, want["logits"])
print("ok")
"""
    out = run_python(code)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def _code_shape():
    """tools/code_shape.py, imported by path (tools/ is no package)."""
    if "code_shape" not in sys.modules:
        spec = importlib.util.spec_from_file_location("code_shape", ROOT / "tools" / "code_shape.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # before running it: its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["code_shape"]


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _forbidden(modules) -> list[tuple[str, str, str]]:
    """(importer, imported, why) for each import that FORBIDDEN_IMPORTS rules out."""
    return [(m.name, target, why) for importers, imported, exempt, why in FORBIDDEN_IMPORTS
            for m in modules.values() if _under(m.name, importers) and not _under(m.name, exempt)
            for target in sorted(m.imports) if _under(target, imported)]


def test_no_module_imports_what_the_layering_forbids():
    found = [f"{name} imports {target} ({why})" for name, target, why in _forbidden(_code_shape().modules(ROOT, "llada"))]
    assert found == []


def test_no_import_circle_in_the_package():
    shape = _code_shape()
    circles = [group for group in shape.circles(shape.modules(ROOT, "llada"))
               if any(_under(name, CIRCLE_FREE) for name in group)]
    assert circles == []


def test_no_module_class_or_function_passes_the_size_limits():
    """tools/code_shape.py's limits (module 500 lines, class 300, function 60 lines and 8 parameters
    outside the command entry points), which `make lint` prints."""
    assert _code_shape().oversized(_code_shape().modules(ROOT, "llada")) == []


def test_the_import_checks_see_a_forbidden_import_and_a_circle(tmp_path):
    """The two checks above on a made-up package: a config that imports its families, which import it back."""
    shape = _code_shape()
    package = tmp_path / "llada"
    (package / "families").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text("def read():\n    from llada.families import x\n")
    (package / "families" / "__init__.py").write_text("from llada.config import read\n")
    (package / "commands").mkdir()
    (package / "commands" / "__init__.py").write_text("")
    (package / "commands" / "flags.py").write_text("from llada import config\n")
    (package / "sampling.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from llada.commands.flags import x\n")
    modules = shape.modules(tmp_path, "llada")
    assert modules["llada.config"].imports == {"llada.families"}
    assert shape.circles(modules) == [["llada.config", "llada.families"]]
    assert sorted((name, target) for name, target, _ in _forbidden(modules)) == [("llada.config", "llada.families"), ("llada.sampling", "llada.commands.flags")]
