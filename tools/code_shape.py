"""The shape of the package, one level above a function: module, class and function sizes, and the
import graph. `make lint` prints it; `--check` exits 1 when a limit is passed.

Limits: a module at most 500 lines, a class 300, a function 60 lines and 8 parameters (self and cls
not counted), except command entry points (`llada/commands/`, `llada/cli.py`), whose parameters
are the command's flags. The import graph counts every `import` of a llada module, at the top of
a module, inside a function or under `if TYPE_CHECKING:` (a lazy or a type-only import is still a
dependency of the design); a circle is a set of modules that reach each other.

    python tools/code_shape.py [--check] [--package llada]
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

MODULE_LINES, CLASS_LINES, FUNCTION_LINES, PARAMETERS = 500, 300, 60, 8
COMMAND_MODULES = ("llada.commands", "llada.cli")  # entry points: a parameter per flag


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: set[str] = field(default_factory=set)


def modules(root: Path, package: str) -> dict[str, Module]:
    """Every module of `package` under `root`, parsed, by dotted name."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = path.read_text()
        found[name] = Module(name, path, ast.parse(text), len(text.splitlines()))
    for m in found.values():
        m.imports = _imports(m, found)
    return found


def _import_nodes(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, wherever it stands."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _imports(module: Module, known: dict[str, Module]) -> set[str]:
    """The package's modules `module` imports (a `from pkg import sub` names the submodule)."""
    is_package = module.path.name == "__init__.py"
    found = set()
    for node in _import_nodes(module.tree):
        if isinstance(node, ast.Import):
            found |= {_nearest(a.name, known) for a in node.names}
            continue
        base = node.module or ""
        if node.level:
            anchor = module.name.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            found.add(full if full in known else _nearest(base, known))
    found.discard(None)
    found.discard(module.name)
    return {f for f in found if f in known}


def _nearest(name: str, known: dict[str, Module]) -> str | None:
    """`name` or its closest enclosing package that is one of `known`."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def circles(mods: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in mods[v].imports:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(mods):
        if v not in index:
            visit(v)
    return sorted(out)


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return len([n for n in names if n not in ("self", "cls")])


def oversized(mods: dict[str, Module]) -> list[str]:
    """One line per module, class or function past its limit."""
    out = []
    for m in mods.values():
        rel = m.path.as_posix()
        if m.lines > MODULE_LINES:
            out.append(f"{rel}: module of {m.lines} lines (limit {MODULE_LINES})")
        entry = m.name.startswith(COMMAND_MODULES)
        for node in ast.walk(m.tree):
            size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            if isinstance(node, ast.ClassDef) and size > CLASS_LINES:
                out.append(f"{rel}:{node.lineno}: class {node.name} of {size} lines (limit {CLASS_LINES})")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not entry:
                if size > FUNCTION_LINES:
                    out.append(f"{rel}:{node.lineno}: function {node.name} of {size} lines (limit {FUNCTION_LINES})")
                if (n := _parameters(node)) > PARAMETERS:
                    out.append(f"{rel}:{node.lineno}: function {node.name} has {n} parameters (limit {PARAMETERS})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a limit is passed or a circle exists")
    parser.add_argument("--package", default="llada")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    mods = modules(root, args.package)
    found_circles, sizes = circles(mods), oversized(mods)
    for group in found_circles:
        print("import circle: " + " <-> ".join(group))
    for line in sizes:
        print(line)
    total = sum(m.lines for m in mods.values())
    print(f"{len(mods)} modules, {total} lines; {len(found_circles)} import circle(s); "
          f"{len(sizes)} over a size limit")
    return 1 if args.check and (found_circles or sizes) else 0


if __name__ == "__main__":
    sys.exit(main())
