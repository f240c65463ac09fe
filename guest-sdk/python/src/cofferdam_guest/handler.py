"""The `@tool` decorator, and the two exports it stands behind.

`@tool(...)` checks the function and compiles its input type when the
module is imported (so `cofferdam-py build` fails early on a type the
schema cannot express), then registers it as this component's one tool.
`describe()` and `invoke()` here are the WIT exports in plain Python: they
take and return plain values, and `_component` converts them to and from
the generated bindings. Nothing here imports the bindings.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import traceback
import typing
from typing import Any, Callable, Optional, TypeVar

from .context import Context, Effect, HostApi, Level
from .errors import SchemaError, ToolError, to_tool_error
from .output import to_json_text
from .schema import InputCodec, InputMismatch, compile_input, is_input_type

__all__ = ["tool", "ToolSpec", "registered", "describe", "invoke", "Outcome"]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
# The host keeps each log record up to 4 KiB.
_MAX_LOG = 4000


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """A registered tool: what `describe` reports and what `invoke` runs."""

    name: str
    version: str
    description: str
    effect: Effect
    input: InputCodec
    input_schema: str
    func: Callable[..., Any]
    input_param: str
    context_param: Optional[str]


_registry: list[ToolSpec] = []


def registered() -> ToolSpec:
    """The one tool this component exports."""
    if not _registry:
        raise SchemaError(
            "no tool is defined: decorate one function with @tool in the module you build"
        )
    return _registry[0]


def _reset_registry() -> None:
    """Forgets registered tools (for tests that define several)."""
    _registry.clear()


def tool(
    func: Optional[F] = None,
    *,
    name: Optional[str] = None,
    version: str = "0.1.0",
    description: Optional[str] = None,
    effect: Effect = Effect.PURE,
) -> Any:
    """Makes `func` this component's tool.

    `func` takes its input as one parameter annotated with a dataclass or
    `TypedDict`, and may take a second parameter annotated `Context`. It
    returns anything JSON can hold (dataclasses, dicts, lists, scalars) and
    reports failures by raising `InvalidInput`, `Transient`, `RateLimited`
    or `Permanent`; any other exception is reported as `permanent`.

    - `name`: what the tool is called by (`[a-z0-9_-]`, at most 64 bytes);
      defaults to the function's name.
    - `version`: the tool's version, semver; default `0.1.0`.
    - `description`: for a model deciding whether to call it; defaults to
      the function's docstring, and one of the two is required.
    - `effect`: `Effect.PURE` (default), `IDEMPOTENT` or `SIDE_EFFECTING`.

    Usable bare (`@tool`) or with keys (`@tool(effect=Effect.IDEMPOTENT)`).
    Raises `SchemaError` at import when the function or its input type
    cannot be a tool, and when a module defines a second tool.
    """

    def register(f: F) -> F:
        _registry.append(_spec(f, name, version, description, effect))
        if len(_registry) > 1:
            names = ", ".join(f"`{s.name}`" for s in _registry)
            del _registry[1:]
            raise SchemaError(f"one tool per component, but this one defines {names}")
        return f

    if func is not None:
        if not callable(func):
            raise TypeError("use @tool or @tool(name=..., effect=...) on a function")
        return register(func)
    return register


def _spec(
    func: Callable[..., Any],
    name: Optional[str],
    version: str,
    description: Optional[str],
    effect: Effect,
) -> ToolSpec:
    label = getattr(func, "__qualname__", repr(func))
    tool_name = name if name is not None else getattr(func, "__name__", "")
    if not isinstance(tool_name, str) or not _NAME.match(tool_name):
        raise SchemaError(
            f"tool name `{tool_name}` (from {'name=' if name else 'the function name'}) must be "
            "1 to 64 characters of a-z, 0-9, `_` and `-`: pass name=\"...\""
        )
    if not isinstance(effect, Effect):
        raise SchemaError(f"tool `{tool_name}`: effect must be an Effect, not {effect!r}")
    if not isinstance(version, str) or not version.strip():
        raise SchemaError(f"tool `{tool_name}`: version must be a non-empty string such as \"1.0.0\"")
    text = description if description is not None else inspect.getdoc(func)
    text = inspect.cleandoc(text) if text else ""
    if not text:
        raise SchemaError(
            f"tool `{tool_name}` has no description: give the function a docstring or "
            "pass description=\"...\" (a model reads it to decide whether to call the tool)"
        )

    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as e:
        raise SchemaError(f"tool `{tool_name}`: cannot resolve the type hints of {label}: {e}") from None
    params = list(inspect.signature(func).parameters.values())
    input_param: Optional[str] = None
    context_param: Optional[str] = None
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SchemaError(f"tool `{tool_name}`: {label} cannot take *{p.name} or **{p.name}")
        hint = hints.get(p.name, inspect.Parameter.empty)
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if base is Context:
            if context_param is not None:
                raise SchemaError(f"tool `{tool_name}`: {label} takes two Context parameters")
            context_param = p.name
        elif input_param is None:
            if hint is inspect.Parameter.empty:
                raise SchemaError(
                    f"tool `{tool_name}`: parameter `{p.name}` of {label} has no type hint: "
                    "annotate it with the input dataclass or TypedDict"
                )
            if not is_input_type(base):
                # compile_input names the type and says what to do.
                compile_input(base, f"tool `{tool_name}`: parameter `{p.name}`")
            input_param = p.name
        else:
            raise SchemaError(
                f"tool `{tool_name}`: {label} takes `{input_param}` and `{p.name}`, but a tool "
                "takes one input parameter (a dataclass or TypedDict) and optionally a Context"
            )
    if input_param is None:
        raise SchemaError(
            f"tool `{tool_name}`: {label} takes no input parameter: give it one annotated "
            "with a dataclass or TypedDict (an empty dataclass for no input)"
        )
    hint = hints[input_param]
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    codec = compile_input(hint, f"tool `{tool_name}`: parameter `{input_param}`")
    schema_text = json.dumps(codec.schema, ensure_ascii=False, separators=(",", ":"))
    return ToolSpec(
        name=tool_name,
        version=version.strip(),
        description=text,
        effect=effect,
        input=codec,
        input_schema=schema_text,
        func=func,
        input_param=input_param,
        context_param=context_param,
    )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A call's result: `case` is `ok` (payload: JSON text) or a WIT
    `tool-error` case (payload: message, or milliseconds for `rate-limited`)."""

    case: str
    payload: Any


def describe(spec: ToolSpec) -> dict[str, Any]:
    """The `tool-info` record as plain values."""
    return {
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "input_schema": spec.input_schema,
        "effect": spec.effect,
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def invoke(
    spec: ToolSpec,
    input_text: str,
    *,
    call_id: str,
    task_id: Optional[str],
    attempt: int,
    deadline_ms: int,
    host: HostApi,
) -> Outcome:
    """Runs one call: parse and check the input, run the function, serialize
    the output. Never raises: every failure becomes a `tool-error` case."""
    try:
        value = json.loads(input_text, parse_constant=_reject_constant)
    except RecursionError:
        return Outcome("invalid-input", "input does not match the schema: nested too deeply")
    except ValueError as e:
        return Outcome("invalid-input", f"input is not JSON: {e}")
    try:
        arg = spec.input.convert(value)
    except InputMismatch as e:
        return Outcome("invalid-input", f"input does not match the schema: {e}")
    except RecursionError:
        return Outcome("invalid-input", "input does not match the schema: nested too deeply")

    kwargs: dict[str, Any] = {spec.input_param: arg}
    if spec.context_param is not None:
        kwargs[spec.context_param] = Context(call_id, task_id, attempt, deadline_ms, host)
    try:
        result = spec.func(**kwargs)
    except BaseException as error:  # noqa: BLE001 - a tool's failure is reported, never a trap
        case, payload = to_tool_error(error)
        if not isinstance(error, ToolError):
            _log_traceback(host, error)
        return Outcome(case, payload)
    try:
        return Outcome("ok", to_json_text(result))
    except (TypeError, ValueError, RecursionError) as e:
        return Outcome("permanent", f"cannot serialize output: {e}")


def _log_traceback(host: HostApi, error: BaseException) -> None:
    """Records where an unexpected exception came from, as an error log line."""
    try:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        if len(text) > _MAX_LOG:
            text = "...\n" + text[-(_MAX_LOG - 4):]
        host.log(Level.ERROR, text.rstrip())
    except Exception:  # noqa: BLE001 - logging must not change the outcome
        pass
