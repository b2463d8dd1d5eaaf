"""Templates a file brings (scenario prompts, emails, files, demonstrations), rendered in a bounded sandbox.

A scenario file is shared between researchers, so its Jinja templates are untrusted code. They are
rendered by :class:`TemplateSandbox`, jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`
(no underscore attributes, so no ``cycler.__init__.__globals__``; no mutation of lists or dicts)
with limits on the work a template can ask for, so that a hostile one fails fast instead of
hanging or eating memory:

* **steps**: every loop iteration and every call (function, method, macro, filter) costs one step;
  ``range`` refuses more items than are left (``range(10**9)`` fails at once, nested loops when
  they have spent the budget);
* **seconds**: each step checks a deadline, so work that steps do not measure (comparing two long
  strings in every iteration of a loop) cannot run on either;
* **made**: the characters and items that operators and calls produce (``'a' * 10**10``,
  ``x ~ x``, a filter's result) are counted, and an operation whose inputs could multiply past
  the budget (``x|replace('', x)``, ``'a'|center(10**9)``) is refused before it runs;
* **text**: the characters one rendered text emits, ``{% set %}`` blocks and macro bodies
  included;
* printf-style formatting (``str.format``, ``%``, the ``format`` filter) is refused: a width
  inside a format string allocates before any check could see it.

Loops, emitted text and ``~`` concatenation have no hook in jinja2's sandbox API, so the parsed
template is rewritten (:class:`_Metered`) to pass them through the sandbox's meters; nothing is
evaluated at compile time (``optimized=False``). One sandbox renders all the texts of one grid cell
(the same set when a scenario is checked and when an episode starts), so a cell's texts share one
budget. A refused template raises :class:`TemplateLimitError`, a :class:`jinja2.TemplateError`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer


@dataclass(frozen=True)
class TemplateLimits:
    steps: int = 100_000  # loop iterations and calls, all texts of a cell together
    seconds: float = 1.0  # wall-clock time, all texts of a cell together (checked at every step)
    made: int = 5_000_000  # characters and items made by operators and calls, all texts of a cell together
    text: int = 200_000  # characters of one rendered text
    int_bits: int = 1024  # size of an integer an operator may make


class TemplateLimitError(SecurityError):
    """A template asked for more than :class:`TemplateLimits` allow, or for something refused."""


# kwargs jinja2 itself passes to calls inside loops, blocks and call blocks: not the template's data
_INTERNAL_KWARGS = frozenset({"_loop_vars", "_block_vars", "caller"})
# filters left out: printf-style formatting allocates its width before any check; lorem ipsum
_REFUSED_FILTERS = frozenset({"format"})
_REFUSED_GLOBALS = frozenset({"lipsum"})


def size(value: Any, limit: int) -> int:
    """Characters and items in ``value`` (strings by length, containers by their contents), counted
    up to just past ``limit``; anything else counts one."""
    total, stack = 0, [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += len(v)
            stack.extend(v)
        elif isinstance(v, dict):
            total += len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, range):
            total += len(v)
        else:
            total += 1
    return total


def _env_call(name: str, arg: nodes.Expr) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(name), [arg], [], None, None)
    return call.set_lineno(arg.lineno or 1)


class _Metered(NodeTransformer):
    """Routes what the sandbox API cannot intercept through the sandbox's meters: each loop's
    iterable (``meter_loop``), each piece of emitted text (``meter_text``) and each ``~``
    concatenation (``meter_made``)."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        if node.recursive:  # loop(...) re-enters the body with an iterable no meter sees
            raise TemplateLimitError("recursive loops are not allowed in a template")
        self.generic_visit(node)
        node.iter = _env_call("meter_loop", node.iter)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        self.generic_visit(node)
        node.nodes = [_env_call("meter_text", child) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Call:
        return _env_call("meter_made", self.generic_visit(node))


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with every variable required and the limits of
    :class:`TemplateLimits` on the work of all the texts it renders."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, limits: TemplateLimits = TemplateLimits()):
        super().__init__(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
                         optimized=False)
        self.limits = limits
        self.steps_left = limits.steps
        self.deadline = time.monotonic() + limits.seconds
        self.made_left = limits.made
        self.text_left = limits.text
        self.globals = {k: v for k, v in self.globals.items() if k not in _REFUSED_GLOBALS}
        self.globals["range"] = self.bounded_range
        self.filters = {name: self._metered_filter(f) for name, f in self.filters.items()
                        if name not in _REFUSED_FILTERS}

    def render(self, template: str, variables: dict[str, Any]) -> str:
        """``template`` rendered with ``variables``; its emitted text is capped on its own, its
        steps and made characters come out of this sandbox's budget."""
        tree = _Metered().visit(self.parse(template))
        tree.set_environment(self)
        self.text_left = self.limits.text
        return self.from_string(tree).render(**variables)

    # --- the meters --------------------------------------------------------------------------

    def _step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise TemplateLimitError(f"the template takes more than {self.limits.steps} loop steps and calls")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"the template takes more than {self.limits.seconds:g} s to render")

    def _made(self, value: Any) -> Any:
        self.made_left -= size(value, self.made_left)
        if self.made_left < 0:
            raise TemplateLimitError(f"the template makes more than {self.limits.made} characters")
        return value

    def _check_inputs(self, args: list[Any]) -> None:
        """Refuse a call whose inputs could make more than the budget left: an integer (a width, a
        count) or a value past it, or two inputs whose product is (``replace('', x)``, ``join``)."""
        sizes = sorted(abs(a) if isinstance(a, int) and not isinstance(a, bool) else size(a, self.made_left)
                       for a in args)
        if sizes and (sizes[-1] > self.made_left or (len(sizes) > 1 and sizes[-1] * sizes[-2] > self.made_left)):
            raise TemplateLimitError(f"a call whose inputs could make more than the {self.limits.made} "
                                     "characters a template may make")

    def meter_loop(self, iterable: Any):
        for item in iterable:
            self._step()
            yield item

    def meter_text(self, value: Any) -> str:
        text = str(value)
        self.text_left -= len(text)
        if self.text_left < 0:
            raise TemplateLimitError(f"the rendered text is longer than {self.limits.text} characters")
        return text

    def meter_made(self, value: Any) -> Any:
        return self._made(value)

    def bounded_range(self, *args: int) -> range:
        r = range(*args)
        if len(r) > self.steps_left:
            raise TemplateLimitError(f"range of {len(r)} items; a template has {self.limits.steps} loop steps")
        return r

    # --- what the sandbox API intercepts -----------------------------------------------------

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's signature)
        if getattr(__obj, "__self__", None) is __self:  # the meters and range: they check themselves
            return __obj(*args, **{k: v for k, v in kwargs.items() if k not in _INTERNAL_KWARGS})
        __self._step()
        data = [v for k, v in kwargs.items() if k not in _INTERNAL_KWARGS]
        receiver = getattr(__obj, "__self__", None)  # the string of 'x'.ljust(n)
        __self._check_inputs([*args, *data, *([receiver] if isinstance(receiver, (str, list, tuple, dict)) else [])])
        return __self._made(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise TemplateLimitError("printf-style formatting (%) is not allowed in a template")
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and ints and right > 0 and left.bit_length() * right > self.limits.int_bits:
            raise TemplateLimitError(f"an integer of more than {self.limits.int_bits} bits")
        if operator == "*" and ints and left.bit_length() + right.bit_length() > self.limits.int_bits:
            raise TemplateLimitError(f"an integer of more than {self.limits.int_bits} bits")
        if operator == "*" and isinstance(left, (str, list, tuple)) != isinstance(right, (str, list, tuple)):
            count, seq = (right, left) if isinstance(left, (str, list, tuple)) else (left, right)
            if isinstance(count, int) and count > 0 and size(seq, self.made_left) * count > self.made_left:
                raise TemplateLimitError(f"a repetition of more than {self.limits.made} characters")
        result = super().call_binop(context, operator, left, right)
        return result if ints else self._made(result)

    def wrap_str_format(self, value: Any):
        if super().wrap_str_format(value) is not None:
            raise TemplateLimitError("str.format is not allowed in a template: write {{ value }} instead")
        return None

    def _metered_filter(self, f):
        @functools.wraps(f)  # keeps jinja2's pass_context / pass_environment marks
        def metered(*args, **kwargs):
            self._step()
            data = [a for a in args if not isinstance(a, (Context, jinja2.Environment, EvalContext))]
            self._check_inputs([*data, *kwargs.values()])
            return self._made(f(*args, **kwargs))

        return metered


def render(template: str, variables: dict[str, Any]) -> str:
    """One template, rendered alone in a fresh :class:`TemplateSandbox`."""
    return TemplateSandbox().render(template, variables)
