"""Chat templates rendered within a budget: of Python steps, of the size of what they build, and
of their output.

A chat template is code from a model directory (or the Hub). transformers renders it in jinja's
ImmutableSandboxedEnvironment, which keeps it from Python's internals and caps one `range` at
MAX_RANGE items, but not what it builds: `{{ 'x' * 2*10**9 }}` is one C-level operation of 2 GB,
`{{ ' '|center(10**9) }}` another, and a loop of 20,000-character pieces renders gigabytes. Inside
`bounded(steps, limit, total)` a render is held to

    steps   Python trace events (`sys.settrace`): loops within loops
    limit   characters in any one value an operator, call, filter or `~` builds, and in the output:
            estimated from the arguments before building where they can make it large (repetition,
            padding widths, joins, replacements, formats, JSON indents), measured after otherwise
    total   characters built over the whole render, so also what can be alive at once

and past one of them raises `OverBudget`. `BoundedEnvironment` is the sandbox that checks them;
`install()` has transformers compile chat templates with it (the tokenizer's own rendering, with
every transformers version's message handling, is kept). Outside `bounded` it renders exactly as
jinja's class does, so other users of transformers in the process see no difference.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import update_wrapper
from typing import Any

from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum


class OverBudget(BaseException):
    """A render past one of its bounds. Not an Exception, so no `except Exception` on the way (jinja
    folding constants, transformers, the template's own code) keeps the render going."""


@dataclass
class Budget:
    """The bounds of one render and what it has built so far (characters)."""

    limit: int
    total: int
    built: int = 0
    bounded: bool = False  # the output went through BoundedEnvironment: the render was checked

    def allow(self, chars: int, what: str) -> None:
        if chars > self.limit:
            raise OverBudget(f"builds a value of about {chars:,} characters ({what}); the limit is {self.limit:,}")

    def charge(self, chars: int, what: str) -> None:
        self.allow(chars, what)
        self.built += chars
        if self.built > self.total:
            raise OverBudget(f"builds more than {self.total:,} characters in all (at {what})")


_BUDGET: ContextVar[Budget | None] = ContextVar("llada_template_budget", default=None)


@contextmanager
def bounded(steps: int, limit: int, total: int) -> Iterator[Budget]:
    """Renders in this block (this thread) are held to `steps`, `limit` and `total` (see the module
    docstring); the Budget it yields tells, after the block, whether a render was checked."""
    budget, left = Budget(limit, total), steps

    def count(frame: Any, event: str, arg: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise OverBudget(f"does not finish (stopped after {steps:,} steps)")
        return count

    token, previous = _BUDGET.set(budget), sys.gettrace()
    sys.settrace(count)
    try:
        yield budget
    finally:
        sys.settrace(previous)
        _BUDGET.reset(token)


def size(value: Any, cap: int = 2**62) -> int:
    """About how many characters `str(value)` takes, each reference inside a container counted in
    full (a list holding one long text a thousand times is a thousand long texts once joined);
    counting stops past `cap`."""
    return _shape(value, cap)[0]


def _shape(value: Any, cap: int) -> tuple[int, int]:
    """(size, nesting depth) of `value`, as `size` counts it."""
    total, deepest, stack = 0, 0, [(value, 0)]
    while stack and total <= cap:
        v, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(v, (str, bytes, bytearray)):
            total += len(v)
        elif isinstance(v, bool) or v is None:
            total += 5
        elif isinstance(v, int):
            total += v.bit_length() // 3 + 2  # decimal digits: bits * log10(2)
        elif isinstance(v, Mapping):
            total += 4 * len(v) + 2
            stack.extend((x, depth + 1) for pair in v.items() for x in pair)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += 2 * len(v) + 2
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, Namespace):
            total += 12
            stack.append((object.__getattribute__(v, "_Namespace__attrs"), depth))
        else:
            total += 24
    return total, deepest


# ------------------------------------------------------------------------------ estimates
# Operations whose result can be far larger than their arguments, with a bound computed from the
# arguments before the operation runs. Every other result is measured after it is built (it is
# then at most a few times its arguments: an escape, an upper-casing).


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _format_bound(fmt: str | bytes, values: list[Any], mark: str, cap: int) -> int:
    """`fmt % values` or `fmt.format(*values)`: each of its fields (at most one per `mark`) as
    wide as the widest number in it or among the values, or as long as all the values."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    numbers = [10**10 if len(d) > 10 else int(d) for d in re.findall(r"\d+", text)]
    numbers += [abs(_int(v)) for v in values]
    return len(text) + text.count(mark) * (size(values, cap) + max(numbers, default=0))


def _binop_bound(op: str, left: Any, right: Any, cap: int) -> int | None:
    if op == "*":
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
            return size(seq, cap) * max(n, 0)
        if isinstance(left, int) and isinstance(right, int):
            return (left.bit_length() + right.bit_length()) // 3 + 2
    if op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        return left.bit_length() * right // 3 + 2
    if op == "%" and isinstance(left, (str, bytes)):
        values = list(right.values()) if isinstance(right, Mapping) else list(right) if isinstance(right, tuple) else [right]
        return _format_bound(left, values, "%", cap)
    return None


def _replace_bound(text: Any, old: Any, new: Any, count: Any, cap: int) -> int:
    if not isinstance(text, (str, bytes)) or not isinstance(old, type(text)):
        return size(text, cap) + size(new, cap)
    n = text.count(old) if old else len(text) + 1
    if _int(count, -1) >= 0:
        n = min(n, count)
    return len(text) + n * size(new, cap)


def _join_bound(sep: Any, items: Any, cap: int) -> int:
    n = len(items) if isinstance(items, (list, tuple, str)) else 1
    return size(items, cap) + n * size(sep, cap)


def _tojson_bound(value: Any, indents: list[Any], cap: int) -> int:
    """json.dumps(value, indent=...) for the widest of `indents` (the filter's arguments)."""
    chars, depth = _shape(value, cap)
    width = max((_indent_width(x) for x in indents), default=0)
    return 6 * chars + chars * depth * width  # \uXXXX escapes; a line per item, indented to its depth


def _indent_width(width: Any) -> int:
    return len(width) if isinstance(width, str) else max(_int(width), 0)


def _width_bound(text: Any, width: Any) -> int:
    return max(len(text) if isinstance(text, (str, bytes)) else 0, _int(width))


def _text_method_bound(owner: Any, name: str, args: tuple, kwargs: dict, cap: int) -> int | None:
    """The bound of `owner.name(*args, **kwargs)` for str / bytes methods that can grow their text."""
    if name in ("center", "ljust", "rjust", "zfill"):
        return _width_bound(owner, _arg(args, kwargs, 0, "width"))
    if name == "expandtabs":
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
        return len(owner) + tabs * max(_int(_arg(args, kwargs, 0, "tabsize", 8)), 0)
    if name == "replace":
        return _replace_bound(owner, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"),
                              _arg(args, kwargs, 2, "count"), cap)
    if name == "join":
        return _join_bound(owner, _arg(args, kwargs, 0, "iterable"), cap)
    if name == "translate":
        table = _arg(args, kwargs, 0, "table")
        longest = max((size(v, cap) for v in table.values()), default=1) if isinstance(table, Mapping) else 1
        return len(owner) * max(longest, 1)
    return None


def _call_bound(obj: Any, args: tuple, kwargs: dict, cap: int) -> int | None:
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if isinstance(owner, (str, bytes)):
        return _text_method_bound(owner, name, args, kwargs, cap)
    if isinstance(owner, int) and name == "to_bytes":
        return max(_int(_arg(args, kwargs, 0, "length", 1)), 0)
    if obj is generate_lorem_ipsum:  # the `lipsum` global: n paragraphs of up to `max` words
        return max(_int(_arg(args, kwargs, 0, "n", 5)), 0) * max(_int(_arg(args, kwargs, 3, "max", 100)), 0) * 16
    return None


# filter name -> the bound of filter(value, *args, **kwargs)
_FILTER_BOUNDS: dict[str, Callable[[Any, tuple, dict, int], int | None]] = {
    "center": lambda v, a, k, cap: _width_bound(v, _arg(a, k, 0, "width", 80)),
    "indent": lambda v, a, k, cap: (size(v, cap) + 1) * (1 + _indent_width(_arg(a, k, 0, "width", 4))),
    "wordwrap": lambda v, a, k, cap: (size(v, cap) + 1) * (1 + size(_arg(a, k, 2, "wrapstring") or "\n", cap)),
    "format": lambda v, a, k, cap: _format_bound(v, [*a, *k.values()], "%", cap) if isinstance(v, str) else None,
    "replace": lambda v, a, k, cap: _replace_bound(v, _arg(a, k, 0, "old"), _arg(a, k, 1, "new"),
                                                   _arg(a, k, 2, "count"), cap),
    "join": lambda v, a, k, cap: _join_bound(_arg(a, k, 0, "d", ""), v, cap),
    "tojson": lambda v, a, k, cap: _tojson_bound(v, [*a, k.get("indent")], cap),
    "pprint": lambda v, a, k, cap: _tojson_bound(v, [1], cap),
    "batch": lambda v, a, k, cap: size(v, cap) + max(_int(_arg(a, k, 0, "linecount")), 0) * (
        2 + size(_arg(a, k, 1, "fill_with"), cap)),
    "slice": lambda v, a, k, cap: size(v, cap) + max(_int(_arg(a, k, 0, "slices")), 0) * (
        4 + size(_arg(a, k, 1, "fill_with"), cap)),
    "sum": lambda v, a, k, cap: None if isinstance(_arg(a, k, 1, "start", 0), (int, float)) else (
        (len(v) + 1 if hasattr(v, "__len__") else 2) * (size(v, cap) + size(_arg(a, k, 1, "start"), cap))),
    "urlize": lambda v, a, k, cap: size(v, cap) * (40 + size(_arg(a, k, 2, "target"), cap)
                                                   + size(_arg(a, k, 3, "rel"), cap)),
}
_MATERIALIZED = {"join", "batch", "slice", "sum"}  # filters whose iterable is measured before they run


def _materialize(value: Any) -> Any:
    """An iterator (a `map` or `select` result) as a list, so that it can be measured; anything
    else as it is."""
    if isinstance(value, (str, bytes, Mapping, list, tuple, set, frozenset)) or not hasattr(value, "__iter__"):
        return value
    return list(value)


def _built(value: Any, what: str) -> Any:
    """`value`, charged to the current budget (if any) by its size."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.charge(size(value, budget.limit + 1), what)
    return value


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (the filter `name`) checked against the current budget, if any."""
    estimate = _FILTER_BOUNDS.get(name)
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context / environment first

    def bounded_filter(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is None or len(args) <= skip:
            return func(*args, **kwargs)
        if name in _MATERIALIZED:
            args = (*args[:skip], _materialize(args[skip]), *args[skip + 1:])
        bound = estimate(args[skip], args[skip + 1:], kwargs, budget.limit + 1) if estimate else None
        if bound is not None:
            budget.allow(bound, f"the {name} filter")
        return _built(func(*args, **kwargs), f"the {name} filter")

    return update_wrapper(bounded_filter, func)


class _Filters(dict):
    """The filter table: every filter put in it (transformers adds `tojson` after construction) bounded."""

    def __init__(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        super().__init__({name: _bounded_filter(name, f) for name, f in filters.items()})

    def __setitem__(self, name: str, func: Callable[..., Any]) -> None:
        super().__setitem__(name, _bounded_filter(name, func))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, func in dict(*args, **kwargs).items():
            self[name] = func


class _BoundedCodeGenerator(CodeGenerator):
    """jinja's code generator, with the `~` operator's result measured (jinja joins it in place)."""

    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.built(")
        super().visit_Concat(node, frame)
        self.write(", '~')")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox, holding renders inside `bounded` to its budget: the operators
    `*`, `**`, `%` and `+`, every call, filter and `~`, and the output are checked."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = _Filters(self.filters)

    def built(self, value: Any, what: str) -> Any:
        return _built(value, what)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _BUDGET.get()
        if budget is None:
            return super().call_binop(context, operator, left, right)
        bound = _binop_bound(operator, left, right, budget.limit + 1)
        if bound is not None:
            budget.allow(bound, f"the {operator} operator")
        return _built(super().call_binop(context, operator, left, right), f"the {operator} operator")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's signature
        budget = _BUDGET.get()
        if budget is None:
            return super().call(__context, __obj, *args, **kwargs)
        if getattr(__obj, "__name__", "") == "join" and args:
            args = (_materialize(args[0]), *args[1:])
        bound = _call_bound(__obj, args, kwargs, budget.limit + 1)
        what = f"a call of {getattr(__obj, '__name__', type(__obj).__name__)}"
        if bound is not None:
            budget.allow(bound, what)
        return _built(super().call(__context, __obj, *args, **kwargs), what)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            budget = _BUDGET.get()
            if budget is not None:
                values = [*args, *kwargs.values()]
                values += list(args[0].values()) if len(args) == 1 and isinstance(args[0], Mapping) else []
                budget.allow(_format_bound(fmt, values, "{", budget.limit + 1), f"a call of {value.__name__}")
            return _built(wrapper(*args, **kwargs), f"a call of {value.__name__}")

        return update_wrapper(bounded_format, value)

    def concat(self, pieces: Any) -> str:  # type: ignore[override] - jinja's "".join, as a method
        """The output (of the template, a macro or a block): at most `limit` characters."""
        budget = _BUDGET.get()
        if budget is None:
            return "".join(pieces)
        budget.bounded = True
        out, chars = [], 0
        for piece in pieces:
            chars += len(piece)
            if chars > budget.limit:
                raise OverBudget(f"renders more than {budget.limit:,} characters")
            out.append(piece)
        budget.charge(chars, "the output")
        return "".join(out)


def install() -> None:
    """Have transformers compile chat templates with `BoundedEnvironment` (idempotent): its
    compiler builds jinja's ImmutableSandboxedEnvironment by that module-level name, in every
    version pyproject.toml allows; templates it compiled before are compiled again."""
    from transformers.utils import chat_template_utils

    if getattr(chat_template_utils, "ImmutableSandboxedEnvironment", None) is not BoundedEnvironment:
        chat_template_utils.ImmutableSandboxedEnvironment = BoundedEnvironment
        clear = getattr(getattr(chat_template_utils, "_compile_jinja_template", None), "cache_clear", None)
        if clear is not None:
            clear()
