"""A call end to end without a component: input checking, the function's
context, output serialization and the mapping of exceptions to tool errors."""

import enum
import json
import unittest
from dataclasses import dataclass, field
from typing import Literal, Optional, TypedDict

from cofferdam_guest import (
    Context,
    Effect,
    InvalidInput,
    Permanent,
    RateLimited,
    SchemaError,
    Transient,
    tool,
)
from cofferdam_guest import handler
from cofferdam_guest.handler import describe, invoke, registered

from .support import FakeHost


def call(input_value, host=None, text=None):
    host = host or FakeHost()
    return invoke(
        registered(),
        text if text is not None else json.dumps(input_value),
        call_id="call-1",
        task_id="task-9",
        attempt=2,
        deadline_ms=5000,
        host=host,
    )


class Size(enum.Enum):
    S = "s"
    L = "l"


@dataclass
class Item:
    name: str
    qty: int = 1


@dataclass
class Order:
    """An order."""

    customer: str
    items: list[Item]
    mode: Literal["fast", "slow"] = "slow"
    size: Size = Size.S
    note: Optional[str] = None
    weights: dict[str, float] = field(default_factory=dict)


class ToolTestCase(unittest.TestCase):
    def setUp(self) -> None:
        handler._reset_registry()

    def tearDown(self) -> None:
        handler._reset_registry()


class InputValidationTest(ToolTestCase):
    """Input that does not match is invalid-input before the function runs."""

    def setUp(self) -> None:
        super().setUp()
        self.ran = []

        @tool
        def place(order: Order) -> dict:
            """Places an order."""
            self.ran.append(order)
            return {"ok": True}

    def assert_invalid(self, value, *fragments, text=None) -> None:
        outcome = call(value, text=text)
        self.assertEqual(outcome.case, "invalid-input", outcome)
        for fragment in fragments:
            self.assertIn(fragment, outcome.payload)
        self.assertEqual(self.ran, [], "the function must not run")

    def test_valid_input_builds_the_dataclasses(self) -> None:
        outcome = call({"customer": "ada", "items": [{"name": "tea", "qty": 2.0}], "size": "l", "weights": {"a": 1}})
        self.assertEqual(outcome.case, "ok")
        order = self.ran[0]
        self.assertEqual(order.items, [Item("tea", 2)])
        self.assertIsInstance(order.items[0].qty, int)
        self.assertIs(order.size, Size.L)
        self.assertEqual(order.weights, {"a": 1.0})
        self.assertIsInstance(order.weights["a"], float)
        self.assertIsNone(order.note)
        self.assertEqual(order.mode, "slow")

    def test_wrong_type(self) -> None:
        self.assert_invalid({"customer": 3, "items": []}, "input does not match the schema", "`customer`", "expected a string, got a number")

    def test_bool_is_not_an_integer(self) -> None:
        self.assert_invalid({"customer": "a", "items": [{"name": "x", "qty": True}]}, "`items[0].qty`", "expected an integer, got a boolean")

    def test_fractional_number_is_not_an_integer(self) -> None:
        self.assert_invalid({"customer": "a", "items": [{"name": "x", "qty": 1.5}]}, "`items[0].qty`", "expected an integer")

    def test_missing_required_field(self) -> None:
        self.assert_invalid({"items": []}, "`customer`", "missing required field")

    def test_unknown_literal_value(self) -> None:
        self.assert_invalid({"customer": "a", "items": [], "mode": "warp"}, "`mode`", 'expected one of "fast", "slow", got "warp"')

    def test_unknown_enum_value(self) -> None:
        self.assert_invalid({"customer": "a", "items": [], "size": "xl"}, "`size`", '"s", "l"')

    def test_extra_field_is_refused(self) -> None:
        self.assert_invalid({"customer": "a", "items": [], "colour": "red"}, "`colour`", "unknown field")

    def test_extra_field_in_nested_object_is_refused(self) -> None:
        self.assert_invalid({"customer": "a", "items": [{"name": "x", "price": 1}]}, "`items[0].price`", "unknown field")

    def test_not_an_object(self) -> None:
        self.assert_invalid([1, 2], "expected an object, got an array")

    def test_not_json(self) -> None:
        self.assert_invalid(None, "input is not JSON", text="{nope")

    def test_nan_is_not_json(self) -> None:
        self.assert_invalid(None, "NaN is not valid JSON", text='{"customer": "a", "items": [], "weights": {"a": NaN}}')

    def test_null_for_a_required_string(self) -> None:
        self.assert_invalid({"customer": None, "items": []}, "`customer`", "got null")


class PostInitTest(ToolTestCase):
    def test_post_init_value_error_is_invalid_input(self) -> None:
        @dataclass
        class Days:
            days: int

            def __post_init__(self) -> None:
                if self.days > 7:
                    raise ValueError("`days` must be at most 7")

        @tool
        def forecast(input: Days) -> int:
            """Forecast."""
            return input.days

        outcome = call({"days": 9})
        self.assertEqual(outcome.case, "invalid-input")
        self.assertIn("`days` must be at most 7", outcome.payload)
        self.assertEqual(call({"days": 3}).payload, "3")


class Movie(TypedDict):
    title: str
    year: int


class TypedDictInputTest(ToolTestCase):
    def test_typeddict_input_is_a_checked_dict(self) -> None:
        @tool
        def rate(movie: Movie) -> Movie:
            """Echoes a movie."""
            return movie

        self.assertEqual(call({"title": "M", "year": 1931}).payload, '{"title":"M","year":1931}')
        self.assertEqual(call({"title": "M"}).case, "invalid-input")


class ErrorMappingTest(ToolTestCase):
    """Exceptions map to the WIT tool-error; nothing escapes as a trap."""

    def setUp(self) -> None:
        super().setUp()

        @dataclass
        class Raise:
            kind: str

        @tool
        def raiser(input: Raise) -> None:
            """Raises."""
            errors = {
                "invalid": InvalidInput("bad argument"),
                "transient": Transient("upstream hiccup"),
                "rate": RateLimited(1500),
                "permanent": Permanent("never"),
                "value": ValueError("boom"),
                "key": KeyError("k"),
                "missing": FileNotFoundError(2, "No such file or directory", "/data/x.csv"),
                "denied": PermissionError(13, "Permission denied", "/etc/passwd"),
                "timeout": TimeoutError("slow"),
                "exit": SystemExit(3),
                "recursion": RecursionError("maximum recursion depth exceeded"),
                "import": ModuleNotFoundError("No module named 'decimal'"),
            }
            raise errors[input.kind]

    def outcome(self, kind: str):
        host = FakeHost()
        return call({"kind": kind}, host=host), host

    def test_tool_errors_keep_their_case_and_message(self) -> None:
        for kind, case, payload in [
            ("invalid", "invalid-input", "bad argument"),
            ("transient", "transient", "upstream hiccup"),
            ("rate", "rate-limited", 1500),
            ("permanent", "permanent", "never"),
        ]:
            with self.subTest(kind):
                outcome, host = self.outcome(kind)
                self.assertEqual((outcome.case, outcome.payload), (case, payload))
                self.assertEqual(host.logs, [], "a tool error is not a bug: no traceback")

    def test_any_other_exception_is_permanent_with_type_and_message(self) -> None:
        outcome, host = self.outcome("value")
        self.assertEqual((outcome.case, outcome.payload), ("permanent", "ValueError: boom"))
        self.assertEqual(host.logs[0][0], "error")
        self.assertIn("Traceback", host.logs[0][1])
        self.assertIn("raise errors[input.kind]", host.logs[0][1])
        self.assertEqual(self.outcome("key")[0].payload, "KeyError: 'k'")
        self.assertEqual(self.outcome("exit")[0].payload, "SystemExit: 3")
        self.assertEqual(self.outcome("recursion")[0].case, "permanent")

    def test_import_during_a_call_says_to_import_at_the_top(self) -> None:
        outcome, _ = self.outcome("import")
        self.assertEqual(outcome.case, "permanent")
        self.assertEqual(
            outcome.payload,
            "ModuleNotFoundError: No module named 'decimal' (a component cannot import modules "
            "during a call: import it at the top of the tool's module)",
        )

    def test_os_errors_map_by_kind(self) -> None:
        outcome, _ = self.outcome("missing")
        self.assertEqual(outcome.case, "invalid-input")
        self.assertEqual(outcome.payload, "FileNotFoundError: [Errno 2] No such file or directory: '/data/x.csv'")
        self.assertEqual(self.outcome("denied")[0].case, "invalid-input")
        self.assertEqual(self.outcome("timeout")[0].case, "transient")

    def test_rate_limited_clamps_to_u32(self) -> None:
        self.assertEqual(RateLimited(-5).retry_after_ms, 0)
        self.assertEqual(RateLimited(2**40).retry_after_ms, 2**32 - 1)
        with self.assertRaises(TypeError):
            RateLimited("soon")  # type: ignore[arg-type]


class OutputTest(ToolTestCase):
    def test_dataclass_output_is_json_in_field_order(self) -> None:
        @dataclass
        class Out:
            z: int
            a: list[Item]
            size: Size

        @dataclass
        class In:
            pass

        @tool
        def make(input: In) -> Out:
            """Makes."""
            return Out(z=1, a=[Item("tea")], size=Size.L)

        self.assertEqual(call({}).payload, '{"z":1,"a":[{"name":"tea","qty":1}],"size":"l"}')

    def test_unserializable_output_is_permanent(self) -> None:
        @dataclass
        class In:
            pass

        @tool
        def make(input: In) -> object:
            """Makes."""
            return {"when": {1, 2}}

        outcome = call({})
        self.assertEqual(outcome.case, "permanent")
        self.assertEqual(outcome.payload, "cannot serialize output: when is a set, which has no JSON form")

    def test_nan_output_is_permanent(self) -> None:
        @dataclass
        class In:
            pass

        @tool
        def make(input: In) -> float:
            """Makes."""
            return float("nan")

        self.assertEqual(call({}).case, "permanent")


class ContextTest(ToolTestCase):
    def test_context_carries_the_call_and_reaches_the_host(self) -> None:
        seen = {}

        @dataclass
        class In:
            pass

        @tool
        def probe(ctx: Context, input: In) -> dict:
            """Probes."""
            seen.update(call_id=ctx.call_id, task_id=ctx.task_id, attempt=ctx.attempt, deadline_ms=ctx.deadline_ms)
            ctx.log("warn", "careful")
            ctx.log_info("hello")
            ctx.progress(1, 3, "a third")
            ctx.progress(2)
            return {"budget": ctx.remaining_budget()}

        host = FakeHost()
        outcome = call({}, host=host)
        self.assertEqual(outcome.payload, '{"budget":1234}')
        self.assertEqual(seen, {"call_id": "call-1", "task_id": "task-9", "attempt": 2, "deadline_ms": 5000})
        self.assertEqual(host.logs, [("warn", "careful"), ("info", "hello")])
        self.assertEqual(host.progress_calls, [(1, 3, "a third"), (2, None, "")])


class DecoratorTest(ToolTestCase):
    def test_describe_reports_metadata_and_schema(self) -> None:
        @tool(name="place-order", version="1.2.0", effect=Effect.SIDE_EFFECTING)
        def place(order: Order) -> None:
            """Places an order.

            Charges the customer."""

        info = describe(registered())
        self.assertEqual(info["name"], "place-order")
        self.assertEqual(info["version"], "1.2.0")
        self.assertEqual(info["description"], "Places an order.\n\nCharges the customer.")
        self.assertIs(info["effect"], Effect.SIDE_EFFECTING)
        schema = json.loads(info["input_schema"])
        self.assertEqual(schema["title"], "Order")
        self.assertEqual(schema["required"], ["customer", "items"])

    def test_description_argument_wins_over_docstring(self) -> None:
        @tool(description="Short.")
        def place(order: Order) -> None:
            """Long."""

        self.assertEqual(registered().description, "Short.")

    def refused(self, *fragments: str):
        return _Refused(self, fragments)

    def test_a_second_tool_is_refused(self) -> None:
        @tool
        def one(order: Order) -> None:
            """One."""

        with self.refused("one tool per component", "`one`, `two`"):

            @tool
            def two(order: Order) -> None:
                """Two."""

        self.assertEqual(registered().name, "one")

    def test_no_description_is_refused(self) -> None:
        with self.refused("has no description"):

            @tool
            def quiet(order: Order) -> None:
                pass

    def test_bad_name_is_refused(self) -> None:
        with self.refused("tool name `Place`", "a-z"):

            @tool
            def Place(order: Order) -> None:
                """P."""

    def test_input_parameter_needs_a_dataclass(self) -> None:
        with self.refused("parameter `order`", "type dict[str, int], not a dataclass or TypedDict"):

            @tool
            def place(order: dict[str, int]) -> None:
                """P."""

    def test_input_parameter_needs_a_hint(self) -> None:
        with self.refused("parameter `order`", "no type hint"):

            @tool
            def place(order) -> None:  # type: ignore[no-untyped-def]
                """P."""

    def test_unsupported_field_fails_at_decoration(self) -> None:
        @dataclass
        class Bad:
            data: bytes

        with self.refused("tool `place`", "parameter `bad`: field `Bad.data` has type bytes"):

            @tool
            def place(bad: Bad) -> None:
                """P."""

    def test_two_inputs_are_refused(self) -> None:
        with self.refused("takes `a` and `b`"):

            @tool
            def place(a: Order, b: Order) -> None:
                """P."""

    def test_no_input_is_refused(self) -> None:
        with self.refused("takes no input parameter"):

            @tool
            def place(ctx: Context) -> None:
                """P."""


class _Refused:
    def __init__(self, test: unittest.TestCase, fragments) -> None:
        self.test = test
        self.fragments = fragments
        self.cm = test.assertRaises(SchemaError)

    def __enter__(self):
        return self.cm.__enter__()

    def __exit__(self, *exc):
        result = self.cm.__exit__(*exc)
        for fragment in self.fragments:
            self.test.assertIn(fragment, str(self.cm.exception))
        return result


if __name__ == "__main__":
    unittest.main()
