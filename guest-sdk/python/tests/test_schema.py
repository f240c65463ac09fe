"""Schema generation from type hints, and the build-time errors for types it cannot express."""

import enum
import unittest
from dataclasses import dataclass, field, make_dataclass
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict, Union

from cofferdam_guest import SchemaError
from cofferdam_guest.schema import compile_input


def schema_of(cls: Any) -> dict:
    return compile_input(cls).schema


@dataclass
class Scalars:
    """All the scalar types."""

    s: str
    i: int
    f: float
    b: bool


class ScalarsTest(unittest.TestCase):
    def test_scalars_map_to_json_types_and_are_required(self) -> None:
        schema = schema_of(Scalars)
        self.assertEqual(schema["$schema"], "https://json-schema.org/draft/2020-12/schema")
        self.assertEqual(schema["title"], "Scalars")
        self.assertEqual(schema["description"], "All the scalar types.")
        self.assertEqual(schema["type"], "object")
        self.assertEqual(
            schema["properties"],
            {
                "s": {"type": "string"},
                "i": {"type": "integer"},
                "f": {"type": "number"},
                "b": {"type": "boolean"},
            },
        )
        self.assertEqual(schema["required"], ["s", "i", "f", "b"])
        self.assertIs(schema["additionalProperties"], False)
        self.assertNotIn("$defs", schema)

    def test_a_dataclass_without_docstring_has_no_description(self) -> None:
        @dataclass
        class Bare:
            x: int

        self.assertNotIn("description", schema_of(Bare))


@dataclass
class Point:
    """A point."""

    x: float
    y: float


@dataclass
class Shapes:
    name: str
    """The shape's name."""
    kind: Literal["polygon", "line"]
    points: list[Point]
    tags: dict[str, int] = field(default_factory=dict)
    label: Optional[str] = None
    closed: bool = True
    weight: Annotated[float, "How heavy."] = 1.0
    note: str = field(default="", metadata={"description": "Free text."})
    origin: Optional[Point] = None


class CompositeTest(unittest.TestCase):
    def setUp(self) -> None:
        self.schema = schema_of(Shapes)
        self.props = self.schema["properties"]

    def test_only_fields_without_default_are_required(self) -> None:
        self.assertEqual(self.schema["required"], ["name", "kind", "points"])

    def test_literal_is_an_enum(self) -> None:
        self.assertEqual(self.props["kind"], {"type": "string", "enum": ["polygon", "line"]})

    def test_list_of_dataclass_refers_to_defs(self) -> None:
        self.assertEqual(self.props["points"], {"type": "array", "items": {"$ref": "#/$defs/Point"}})
        self.assertEqual(
            self.schema["$defs"]["Point"],
            {
                "title": "Point",
                "description": "A point.",
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            },
        )

    def test_dict_of_str_is_an_object_with_additional_properties(self) -> None:
        self.assertEqual(self.props["tags"], {"type": "object", "additionalProperties": {"type": "integer"}})

    def test_optional_scalar_is_nullable_with_its_default(self) -> None:
        self.assertEqual(self.props["label"], {"type": ["string", "null"], "default": None})

    def test_optional_dataclass_is_any_of_ref_or_null(self) -> None:
        self.assertEqual(
            self.props["origin"],
            {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}], "default": None},
        )

    def test_defaults_are_shown(self) -> None:
        self.assertEqual(self.props["closed"], {"type": "boolean", "default": True})

    def test_descriptions_come_from_docstrings_annotated_and_metadata(self) -> None:
        self.assertEqual(self.props["name"]["description"], "The shape's name.")
        self.assertEqual(self.props["weight"], {"type": "number", "description": "How heavy.", "default": 1.0})
        self.assertEqual(self.props["note"], {"type": "string", "description": "Free text.", "default": ""})


class Color(enum.Enum):
    """A primary color."""

    RED = "red"
    BLUE = "blue"


@dataclass
class Tree:
    label: str
    children: list["Tree"] = field(default_factory=list)


@dataclass
class Outer:
    tree: Tree
    color: Color = Color.RED


class EnumsAndRecursionTest(unittest.TestCase):
    def test_enum_is_an_enum_of_values_with_its_docstring(self) -> None:
        props = schema_of(Outer)["properties"]
        self.assertEqual(
            props["color"],
            {"type": "string", "enum": ["red", "blue"], "description": "A primary color.", "default": "red"},
        )

    def test_recursive_dataclass_refers_to_itself(self) -> None:
        schema = schema_of(Outer)
        self.assertEqual(
            schema["$defs"]["Tree"]["properties"]["children"],
            {"type": "array", "items": {"$ref": "#/$defs/Tree"}},
        )

    def test_recursion_into_the_root_refers_to_the_document(self) -> None:
        schema = schema_of(Tree)
        self.assertEqual(schema["properties"]["children"]["items"], {"$ref": "#"})


class Movie(TypedDict):
    title: str
    year: int
    rating: NotRequired[float]


class TypedDictTest(unittest.TestCase):
    def test_typeddict_keys_are_required_unless_not_required(self) -> None:
        schema = schema_of(Movie)
        self.assertEqual(schema["required"], ["title", "year"])
        self.assertEqual(schema["properties"]["rating"], {"type": "number"})
        self.assertIs(schema["additionalProperties"], False)


@dataclass
class A:
    x: int


@dataclass
class B:
    y: int


class NotAClass:
    pass


class UnsupportedTypesTest(unittest.TestCase):
    """A type the generator cannot express fails when the module is imported,
    naming the field and the type, never producing a wrong schema."""

    def assert_refused(self, annotation: Any, *fragments: str) -> None:
        Input = make_dataclass("Input", [("value", annotation)])
        with self.assertRaises(SchemaError) as caught:
            compile_input(Input)
        message = str(caught.exception)
        self.assertIn("field `", message)
        self.assertIn("Input.value`", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_union_of_two_dataclasses(self) -> None:
        self.assert_refused(Union[A, B], "Union[A, B]", "only Optional[T]")

    def test_union_of_scalars(self) -> None:
        self.assert_refused(int | str, "only Optional[T]")

    def test_set(self) -> None:
        self.assert_refused(set[str], "set[str]", "list[T]")

    def test_bytes(self) -> None:
        self.assert_refused(bytes, "type bytes:", "use str")

    def test_tuple(self) -> None:
        self.assert_refused(tuple[int, int], "tuple[int, int]")

    def test_class_without_hints(self) -> None:
        self.assert_refused(NotAClass, "NotAClass", "not a JSON type, a dataclass or a TypedDict")

    def test_bare_list_and_dict(self) -> None:
        self.assert_refused(list, "list[T]")
        self.assert_refused(dict, "dict[str, T]")

    def test_dict_with_int_keys(self) -> None:
        self.assert_refused(dict[int, str], "dict[int, str]", "keys are strings")

    def test_nested_field_is_named(self) -> None:
        @dataclass
        class Inner:
            blob: bytes

        @dataclass
        class Input:
            inner: Inner

        with self.assertRaises(SchemaError) as caught:
            compile_input(Input)
        self.assertIn("Inner.blob", str(caught.exception))

    def test_input_that_is_not_a_dataclass(self) -> None:
        with self.assertRaises(SchemaError) as caught:
            compile_input(str)
        self.assertIn("not a dataclass or TypedDict", str(caught.exception))

    def test_unresolvable_forward_reference(self) -> None:
        @dataclass
        class Input:
            value: "Missing"  # type: ignore[name-defined]  # noqa: F821

        with self.assertRaises(SchemaError) as caught:
            compile_input(Input)
        self.assertIn("cannot resolve the type hints", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
