"""JSON Schema from type hints, and input checking against the same types.

`compile_input(cls)` turns a dataclass or `TypedDict` into a `Codec` once:
its `schema()` is what `describe` reports, and its `convert(value)` builds
the input object from parsed JSON or raises `InputMismatch` naming the
field. Both come from one walk over the type, so the schema a model sees
and the check a call meets cannot drift apart.

| Python type                         | JSON Schema                                  |
|-------------------------------------|----------------------------------------------|
| `str`, `int`, `float`, `bool`       | `string`, `integer`, `number`, `boolean`     |
| `None`                              | `null`                                       |
| `Optional[T]`, `T | None`           | T or `null`; a field of it is not required   |
| `list[T]`                           | `array` of T                                 |
| `dict[str, T]`                      | `object` with `additionalProperties` T       |
| `Literal[...]` (str, int, bool)     | `enum`                                       |
| `enum.Enum` subclass (str/int)      | `enum` of its values                         |
| dataclass, `TypedDict`              | `object` in `$defs`, unknown keys refused    |
| `Annotated[T, "text"]`              | T with that description                      |
| `typing.Any`                        | `{}` (any JSON value, not checked)           |

Anything else (other unions, `set`, `tuple`, `bytes`, `datetime`, a class
without type hints, a bare `list` or `dict`) raises `SchemaError` naming
the field and the type, when the tool's module is imported. This module
does not know about the host.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import json
import math
import textwrap
import types
import typing
from typing import Any, Optional

from .errors import SchemaError
from .output import to_jsonable

__all__ = ["Codec", "InputMismatch", "compile_input", "is_input_type", "JSON_SCHEMA_DIALECT"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_MISSING = object()


class InputMismatch(ValueError):
    """Parsed JSON that does not fit the input type; `path` says where."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"`{path}`: {message}" if path else message)
        self.path = path
        self.message = message


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    """`tp` as written in source, without module prefixes."""
    if tp is type(None) or tp is None:
        return "None"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        return "Union[" + ", ".join(_type_name(a) for a in args) + "]"
    if hasattr(types, "UnionType") and origin is types.UnionType:
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None and args:
        base = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
        return f"{base}[{', '.join(_type_name(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__name__
    if isinstance(tp, typing.ForwardRef):
        return tp.__forward_arg__
    return repr(tp).replace("typing.", "")


class Codec:
    """One type: its JSON Schema, and how JSON becomes a value of it."""

    def schema(self, defs: "_Defs") -> dict[str, Any]:
        raise NotImplementedError

    def convert(self, value: Any, path: str) -> Any:
        raise NotImplementedError


class _Defs:
    """`$defs` being built: one entry per object type, named by class."""

    def __init__(self, root: "ObjectCodec") -> None:
        self.root = root
        self.names: dict[Any, str] = {}
        self.schemas: dict[str, dict[str, Any]] = {}

    def ref(self, codec: "ObjectCodec") -> dict[str, Any]:
        if codec is self.root:
            return {"$ref": "#"}
        name = self.names.get(codec.cls)
        if name is None:
            name = codec.cls.__name__
            n = 2
            while name in self.schemas:
                name = f"{codec.cls.__name__}{n}"
                n += 1
            self.names[codec.cls] = name
            self.schemas[name] = {}  # reserve before recursing (recursive types)
            self.schemas[name] = codec.object_schema(self)
        return {"$ref": f"#/$defs/{name}"}


class _Scalar(Codec):
    def __init__(self, json_type: str) -> None:
        self.json_type = json_type

    def schema(self, defs: _Defs) -> dict[str, Any]:
        return {"type": self.json_type}

    def convert(self, value: Any, path: str) -> Any:
        t = self.json_type
        if t == "string" and isinstance(value, str):
            return value
        if t == "boolean" and isinstance(value, bool):
            return value
        if t == "null" and value is None:
            return None
        if t == "integer" and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        if t == "number" and not isinstance(value, bool) and isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise InputMismatch(path, "expected a finite number")
            return float(value)
        expected = {"string": "a string", "boolean": "a boolean", "null": "null",
                    "integer": "an integer", "number": "a number"}[t]
        raise InputMismatch(path, f"expected {expected}, got {_json_kind(value)}")


class _AnyCodec(Codec):
    def schema(self, defs: _Defs) -> dict[str, Any]:
        return {}

    def convert(self, value: Any, path: str) -> Any:
        return value


class _Optional(Codec):
    def __init__(self, inner: Codec) -> None:
        self.inner = inner

    def schema(self, defs: _Defs) -> dict[str, Any]:
        inner = self.inner.schema(defs)
        kind = inner.get("type")
        if isinstance(kind, str) and "$ref" not in inner:
            out = dict(inner)
            out["type"] = [kind, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            return out
        return {"anyOf": [inner, {"type": "null"}]}

    def convert(self, value: Any, path: str) -> Any:
        if value is None:
            return None
        return self.inner.convert(value, path)


class _List(Codec):
    def __init__(self, item: Codec) -> None:
        self.item = item

    def schema(self, defs: _Defs) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema(defs)}

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise InputMismatch(path, f"expected an array, got {_json_kind(value)}")
        return [self.item.convert(v, f"{path}[{i}]") for i, v in enumerate(value)]


class _Dict(Codec):
    def __init__(self, item: Codec) -> None:
        self.item = item

    def schema(self, defs: _Defs) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.item.schema(defs)}

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise InputMismatch(path, f"expected an object, got {_json_kind(value)}")
        return {k: self.item.convert(v, _join(path, k)) for k, v in value.items()}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class _Literal(Codec):
    def __init__(self, values: list[Any], enum_cls: Optional[type] = None) -> None:
        self.values = values
        self.enum_cls = enum_cls

    def _wire(self) -> list[Any]:
        if self.enum_cls is None:
            return list(self.values)
        return [m.value for m in self.values]

    def schema(self, defs: _Defs) -> dict[str, Any]:
        wire = self._wire()
        kinds = {_literal_type(v) for v in wire}
        out: dict[str, Any] = {}
        if len(kinds) == 1:
            out["type"] = kinds.pop()
        out["enum"] = wire
        if self.enum_cls is not None:
            doc = _own_doc(self.enum_cls)
            if doc:
                out["description"] = doc
        return out

    def convert(self, value: Any, path: str) -> Any:
        for wire, member in zip(self._wire(), self.values):
            if _same(wire, value):
                return member
        allowed = ", ".join(_show(v) for v in self._wire())
        raise InputMismatch(path, f"expected one of {allowed}, got {_show(value)}")


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _literal_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "string"


@dataclasses.dataclass
class _Field:
    name: str
    codec: Codec
    required: bool
    default: Any  # _MISSING when none is shown in the schema
    fill: Any  # _MISSING: leave to the class; else the value to pass when absent
    description: Optional[str]


class ObjectCodec(Codec):
    """A dataclass or TypedDict: a closed JSON object."""

    def __init__(self, cls: type, kind: str) -> None:
        self.cls = cls
        self.kind = kind  # "dataclass" or "typeddict"
        self.fields: list[_Field] = []
        self.description: Optional[str] = _own_doc(cls)

    def schema(self, defs: _Defs) -> dict[str, Any]:
        return defs.ref(self)

    def object_schema(self, defs: _Defs) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.cls.__name__}
        if self.description:
            out["description"] = self.description
        out["type"] = "object"
        props: dict[str, Any] = {}
        for f in self.fields:
            prop = f.codec.schema(defs)
            if f.description:
                # A `$ref` with siblings is fine in 2020-12.
                prop = {**prop, "description": f.description}
            if f.default is not _MISSING:
                prop = {**prop, "default": f.default}
            props[f.name] = prop
        out["properties"] = props
        required = [f.name for f in self.fields if f.required]
        if required:
            out["required"] = required
        out["additionalProperties"] = False
        return out

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise InputMismatch(path, f"expected an object, got {_json_kind(value)}")
        known = {f.name for f in self.fields}
        extra = [k for k in value if k not in known]
        if extra:
            fields = ", ".join(f"`{k}`" for k in sorted(known)) or "none"
            raise InputMismatch(
                _join(path, extra[0]), f"unknown field (expected fields: {fields})"
            )
        kwargs: dict[str, Any] = {}
        for f in self.fields:
            if f.name in value:
                kwargs[f.name] = f.codec.convert(value[f.name], _join(path, f.name))
            elif f.required:
                raise InputMismatch(_join(path, f.name), "missing required field")
            elif f.fill is not _MISSING:
                kwargs[f.name] = f.fill
        if self.kind == "typeddict":
            return kwargs
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as e:
            # __post_init__ checks are input validation too.
            raise InputMismatch(path, f"{self.cls.__name__} rejected it: {e}") from None


def _own_doc(cls: type) -> Optional[str]:
    doc = cls.__dict__.get("__doc__")
    if not doc:
        return None
    doc = inspect.cleandoc(doc)
    # dataclasses make a docstring of the signature when there is none.
    if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return None
    if doc in ("An enumeration.",):
        return None
    return doc


def _attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings written under fields (`x: int` then `\"\"\"text\"\"\"`)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError, IndentationError):
            continue
        node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
        if node is None:
            continue
        body = node.body
        for a, b in zip(body, body[1:]):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = inspect.cleandoc(b.value.value)
    return docs


def is_typeddict(tp: Any) -> bool:
    return typing.is_typeddict(tp)


def is_input_type(tp: Any) -> bool:
    """A dataclass or TypedDict class: what a tool's input may be."""
    return (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or is_typeddict(tp)


class _Compiler:
    def __init__(self) -> None:
        self.objects: dict[Any, ObjectCodec] = {}

    def fail(self, where: str, tp: Any, why: str) -> SchemaError:
        return SchemaError(f"{where} has type {_type_name(tp)}: {why}")

    def object(self, cls: type, where: str) -> ObjectCodec:
        if cls in self.objects:
            return self.objects[cls]
        kind = "dataclass" if dataclasses.is_dataclass(cls) else "typeddict"
        codec = ObjectCodec(cls, kind)
        self.objects[cls] = codec  # before the fields: types may refer to themselves
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as e:  # NameError for a forward reference, mostly
            raise SchemaError(
                f"cannot resolve the type hints of {cls.__name__}: {e}"
            ) from None
        docs = _attribute_docs(cls)
        if kind == "dataclass":
            for f in dataclasses.fields(cls):
                if not f.init:
                    continue  # computed in __post_init__, not part of the input
                tp = hints.get(f.name, f.type)
                field_where = f"field `{cls.__name__}.{f.name}`"
                tp, note = _strip_annotated(tp)
                fcodec = self.codec(tp, field_where)
                description = f.metadata.get("description") or note or docs.get(f.name)
                has_default = f.default is not dataclasses.MISSING
                has_factory = f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                optional = isinstance(fcodec, _Optional)
                shown = _MISSING
                if has_default:
                    shown = _json_default(f.default)
                codec.fields.append(
                    _Field(
                        name=f.name,
                        codec=fcodec,
                        required=not (has_default or has_factory or optional),
                        default=shown,
                        fill=None if optional and not (has_default or has_factory) else _MISSING,
                        description=description,
                    )
                )
        else:
            required_keys = getattr(cls, "__required_keys__", frozenset())
            for name, tp in hints.items():
                field_where = f"field `{cls.__name__}.{name}`"
                tp = _strip_required(tp)
                tp, note = _strip_annotated(tp)
                tp = _strip_required(tp)
                fcodec = self.codec(tp, field_where)
                codec.fields.append(
                    _Field(
                        name=name,
                        codec=fcodec,
                        required=name in required_keys and not isinstance(fcodec, _Optional),
                        default=_MISSING,
                        fill=_MISSING,
                        description=note or docs.get(name),
                    )
                )
        return codec

    def codec(self, tp: Any, where: str) -> Codec:
        tp, _ = _strip_annotated(tp)
        if tp is Any:
            return _AnyCodec()
        if tp is str:
            return _Scalar("string")
        if tp is bool:
            return _Scalar("boolean")
        if tp is int:
            return _Scalar("integer")
        if tp is float:
            return _Scalar("number")
        if tp is None or tp is type(None):
            return _Scalar("null")
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1 and len(rest) < len(args):
                return _Optional(self.codec(rest[0], where))
            raise self.fail(
                where, tp,
                "only Optional[T] (T | None) unions are supported; "
                "use one type, or a dataclass with optional fields",
            )
        if origin is typing.Literal:
            values = list(args)
            for v in values:
                if not (v is None or isinstance(v, (str, int, bool))) or isinstance(v, enum.Enum):
                    raise self.fail(where, tp, f"Literal values must be str, int or bool, not {v!r}")
            return _Literal(values)
        if origin is list:
            if len(args) != 1:
                raise self.fail(where, tp, "give the item type, as in list[T]")
            return _List(self.codec(args[0], where))
        if origin is dict:
            if len(args) != 2:
                raise self.fail(where, tp, "give the types, as in dict[str, T]")
            if args[0] is not str:
                raise self.fail(where, tp, "JSON object keys are strings; use dict[str, T]")
            return _Dict(self.codec(args[1], where))
        if tp is list:
            raise self.fail(where, tp, "give the item type, as in list[T]")
        if tp is dict:
            raise self.fail(where, tp, "give the types, as in dict[str, T]")
        if tp in (set, frozenset) or origin in (set, frozenset):
            raise self.fail(where, tp, "JSON has no sets; use list[T]")
        if tp is tuple or origin is tuple:
            raise self.fail(where, tp, "tuples are not supported; use list[T] or a dataclass")
        if tp in (bytes, bytearray, memoryview):
            raise self.fail(where, tp, "JSON has no bytes; use str (base64 or hex text)")
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            members = list(tp)
            if not members:
                raise self.fail(where, tp, "an Enum needs members")
            for m in members:
                if isinstance(m.value, bool) or not isinstance(m.value, (str, int)):
                    raise self.fail(where, tp, f"Enum member {m.name} is not a str or int")
            return _Literal(members, enum_cls=tp)
        if is_input_type(tp):
            return self.object(tp, where)
        if isinstance(tp, typing.TypeVar):
            raise self.fail(where, tp, "name a concrete type, not a type variable")
        if isinstance(tp, (str, typing.ForwardRef)):
            raise self.fail(where, tp, "this forward reference could not be resolved")
        if isinstance(tp, type):
            raise self.fail(
                where, tp,
                "not a JSON type, a dataclass or a TypedDict "
                "(a class needs @dataclass and type hints on its fields)",
            )
        raise self.fail(where, tp, "it has no JSON Schema here")


def _strip_annotated(tp: Any) -> tuple[Any, Optional[str]]:
    note: Optional[str] = None
    while typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        for extra in extras:
            if isinstance(extra, str) and note is None:
                note = inspect.cleandoc(extra)
            elif hasattr(extra, "documentation") and note is None:  # typing_extensions.Doc
                note = str(extra.documentation)
        tp = base
    return tp, note


def _strip_required(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    required = getattr(typing, "Required", None)
    not_required = getattr(typing, "NotRequired", None)
    if origin is not None and origin in (required, not_required):
        return typing.get_args(tp)[0]
    return tp


def _json_default(value: Any) -> Any:
    """The default as JSON for the schema, or _MISSING when it has no JSON form."""
    try:
        return to_jsonable(value)
    except (TypeError, ValueError):
        return _MISSING


class InputCodec:
    """A tool's input type, compiled: its schema and its converter."""

    def __init__(self, root: ObjectCodec) -> None:
        self.root = root
        defs = _Defs(root)
        body = root.object_schema(defs)
        schema: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, **body}
        if defs.schemas:
            schema["$defs"] = defs.schemas
        self.schema = schema

    def convert(self, value: Any) -> Any:
        return self.root.convert(value, "")


def compile_input(cls: Any, where: str = "the tool's input") -> InputCodec:
    """Compiles a dataclass or TypedDict into its schema and converter.

    Raises `SchemaError` naming the field and type that JSON Schema cannot
    express here.
    """
    if not is_input_type(cls):
        raise SchemaError(
            f"{where} has type {_type_name(cls)}, not a dataclass or TypedDict: "
            "the input of a tool is a JSON object, so declare its fields in a @dataclass"
        )
    compiler = _Compiler()
    try:
        return InputCodec(compiler.object(cls, where))
    except SchemaError as e:
        raise SchemaError(f"{where}: {e}") from None
