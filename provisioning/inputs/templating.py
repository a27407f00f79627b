"""The one Jinja environment for everything we render from the user's files: a bounded sandbox.

Templates (``file: {template: ...}``), healthcheck targets and cloud userdata are rendered by
``jinja2.sandbox.ImmutableSandboxedEnvironment``: no attribute starting with ``_``, no method that
changes a value, so ``{{ cycler.__init__.__globals__ }}`` cannot reach Python. On top of the
sandbox, every render is bounded so a template cannot exhaust the controller:

* at most ``MAX_OUTPUT`` characters of output, and of any one string built inside;
* at most ``MAX_ITERATIONS`` loop iterations and calls (macros included) per render;
* numbers given to functions and filters (widths, counts) at most ``MAX_OUTPUT``, and
  arithmetic results at most ``MAX_INT_BITS`` bits;
* template files are regular files of at most ``MAX_TEMPLATE_BYTES`` inside the base directory.

A violation is a ``ConfigError`` naming the file and the template line (exit status 2).
jinja2 is imported on first use only.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
from typing import Any, Iterable, Iterator, Mapping

from provisioning.errors import ConfigError
from provisioning.inputs.userfiles import MAX_TEMPLATE_BYTES, check_user_file, read_user_text

__all__ = ["render_text", "render_file", "template_syntax_problem", "sandbox",
           "MAX_OUTPUT", "MAX_ITERATIONS", "MAX_INT_BITS"]

MAX_OUTPUT = 4 * 1024 * 1024
MAX_ITERATIONS = 100_000
MAX_INT_BITS = 256
_WIDTH = re.compile(r"\d{7,}")

_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("template_budget",
                                                                           default=None)
_environments: dict[str | None, Any] = {}


def _limit(message: str) -> Exception:
    from jinja2.exceptions import SecurityError

    return SecurityError(message)


def _spend(count: int = 1) -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget[0] += count
    if budget[0] > MAX_ITERATIONS:
        raise _limit(f"more than {MAX_ITERATIONS} loop iterations and calls in one render")


def _check_args(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT:
            raise _limit(f"the number {value} is larger than the template limit {MAX_OUTPUT}")
        if isinstance(value, str) and len(value) > MAX_OUTPUT:
            raise _limit(f"a string longer than {MAX_OUTPUT} characters")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_OUTPUT:
        raise _limit(f"a value longer than {MAX_OUTPUT} characters or items")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise _limit(f"a number larger than {MAX_INT_BITS} bits")
    return value


def _guard_loop(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _spend()
        yield item


def _bounded_filter(function: Any) -> Any:
    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_args(args[1:], kwargs)
        return _check_size(function(*args, **kwargs))
    return bounded


def _make_environment(base_dir: str | None) -> Any:
    import jinja2
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedLoader(jinja2.FileSystemLoader):
        """Template files: regular files of bounded size (``..`` is refused by Jinja)."""

        def get_source(self, environment: Any, template: str) -> Any:
            source = super().get_source(environment, template)
            check_user_file(source[1], what="template", limit=MAX_TEMPLATE_BYTES)
            return source

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}
            for unbounded in ("lipsum", "namespace"):
                self.globals.pop(unbounded, None)
            self.guard_loop = _guard_loop
            self.guard_size = _check_size

        def call(__self, __context: Any, __obj: Any,  # noqa: N805
                 *args: Any, **kwargs: Any) -> Any:
            _spend()
            _check_args(args, kwargs)
            return _check_size(super().call(__context, __obj, *args, **kwargs))

        def wrap_str_format(self, value: Any) -> Any:
            wrapped = super().wrap_str_format(value)
            if wrapped is not None and _WIDTH.search(value.__self__):
                def refuse(*args: Any, **kwargs: Any) -> str:
                    raise _limit("a format width larger than the template limit")
                return refuse
            return wrapped

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and abs(right) > MAX_INT_BITS:
                raise _limit(f"an exponent above {MAX_INT_BITS}")
            if operator == "*":
                for seq, count in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and \
                            len(seq) * count > MAX_OUTPUT:
                        raise _limit(f"a repetition longer than {MAX_OUTPUT}")
            if operator == "%" and isinstance(left, str) and _WIDTH.search(left):
                raise _limit("a format width larger than the template limit")
            return _check_size(super().call_binop(context, operator, left, right))

        def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
            tree = super()._parse(source, name, filename)
            for loop in tree.find_all(nodes.For):
                loop.iter = nodes.Call(nodes.EnvironmentAttribute("guard_loop"), [loop.iter], [],
                                       None, None, lineno=loop.lineno)
            for concat in list(tree.find_all(nodes.Concat)):
                parent_guard = nodes.Call(nodes.EnvironmentAttribute("guard_size"),
                                          [nodes.Concat(concat.nodes, lineno=concat.lineno)],
                                          [], None, None, lineno=concat.lineno)
                concat.nodes = [parent_guard]
            return tree

    loader = BoundedLoader(base_dir) if base_dir is not None else None
    return BoundedSandbox(loader=loader, undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True, autoescape=False)


def sandbox(base_dir: str | None = None) -> Any:
    """The bounded sandbox environment (one per base directory, built on first use)."""
    if base_dir not in _environments:
        _environments[base_dir] = _make_environment(base_dir)
    return _environments[base_dir]


def _template_line(exc: BaseException, template_file: str) -> int | None:
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in (template_file, "<template>"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render(template: Any, variables: Mapping[str, Any], label: str, *, file: str | None,
            key: str | None, known: Iterable[str]) -> str:
    import jinja2

    token = _budget.set([0])
    try:
        out, size = [], 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise _limit(f"output longer than {MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, template.filename or "<template>")
        where = f"{label}, line {line}" if line else label
        raise ConfigError(f"{where}: {exc.message}; variables are: {', '.join(sorted(known))}",
                          file=file, key=key) from exc
    except jinja2.exceptions.SecurityError as exc:
        line = _template_line(exc, template.filename or "<template>")
        where = f"{label}, line {line}" if line else label
        raise ConfigError(f"{where}: not allowed in a template: {exc}", file=file,
                          key=key) from exc
    except jinja2.TemplateError as exc:
        line = _template_line(exc, template.filename or "<template>")
        where = f"{label}, line {line}" if line else label
        raise ConfigError(f"{where}: {exc}", file=file, key=key) from exc
    except RecursionError as exc:
        raise ConfigError(f"{label}: recursion too deep (a macro calling itself?)", file=file,
                          key=key) from exc
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        line = _template_line(exc, template.filename or "<template>")
        where = f"{label}, line {line}" if line else label
        raise ConfigError(f"{where}: {type(exc).__name__}: {exc}", file=file, key=key) from exc
    finally:
        _budget.reset(token)


def render_text(text: str, variables: Mapping[str, Any], *, file: str | None, key: str | None,
                label: str | None = None) -> str:
    """Render a template given as text (a healthcheck target, inline userdata)."""
    import jinja2

    label = label or f"template {text[:40]!r}"
    try:
        template = sandbox().from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{label}, line {exc.lineno}: {exc.message}", file=file,
                          key=key) from exc
    return _render(template, variables, label, file=file, key=key, known=variables)


def render_file(path: str, base_dir: str, variables: Mapping[str, Any], *, file: str | None,
                key: str | None) -> str:
    """Render the template file ``path`` (relative to ``base_dir``)."""
    import jinja2

    try:
        template = sandbox(base_dir).get_template(path)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template {path!r} not found in {base_dir}", file=file,
                          key=key) from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template {path}, line {exc.lineno}: {exc.message}", file=file,
                          key=key) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"template {path} is not UTF-8 text", file=file, key=key) from exc
    return _render(template, variables, f"template {path}", file=file, key=key, known=variables)


def template_syntax_problem(path: str, base_dir: str) -> str | None:
    """A message when the template file is missing, unreadable or does not parse, else None."""
    import jinja2

    if os.path.isabs(path) or ".." in path.replace(os.sep, "/").split("/"):
        # the loader finds templates inside base_dir only: say so now, not after a machine
        # was created for a render that cannot find it
        return (f"template {path!r} is outside the cluster file's directory {base_dir}; "
                "give a path relative to it, without '..'")
    full = os.path.join(base_dir, path)
    try:
        text = read_user_text(full, what="template file", limit=MAX_TEMPLATE_BYTES)
        sandbox(base_dir).parse(text)
    except ConfigError as exc:
        return exc.problems[0].message
    except jinja2.TemplateSyntaxError as exc:
        return f"template {path}, line {exc.lineno}: {exc.message}"
    return None
