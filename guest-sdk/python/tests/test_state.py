"""`ctx.state()` over a fake `wasi:keyvalue` bucket: JSON values, counters,
paging, and the Rust SDK's mapping of store errors."""

import unittest

from cofferdam_guest import Context, InvalidInput, Permanent
from cofferdam_guest.state import StoreError

from .support import FakeBucket, FakeHost


def context(host: FakeHost) -> Context:
    return Context("c", None, 1, 1000, host)


class StateTest(unittest.TestCase):
    def test_values_round_trip_as_json(self) -> None:
        host = FakeHost()
        state = context(host).state()
        self.assertIsNone(state.get("seen"))
        self.assertEqual(state.get("seen", []), [])
        state.set("seen", ["a", {"b": 1}])
        self.assertEqual(host.bucket.data["seen"], b'["a",{"b":1}]')
        self.assertEqual(state.get("seen"), ["a", {"b": 1}])
        state.delete("seen")
        state.delete("seen")
        self.assertIsNone(state.get("seen"))

    def test_counters_increment(self) -> None:
        state = context(FakeHost()).state()
        self.assertEqual(state.increment("runs"), 1)
        self.assertEqual(state.increment("runs", 5), 6)
        with self.assertRaises(ValueError):
            state.increment("runs", -1)

    def test_keys_follow_the_cursor_across_pages(self) -> None:
        host = FakeHost(bucket=FakeBucket(page=2))
        state = context(host).state()
        for key in "edcba":
            state.set(key, 1)
        self.assertEqual(state.keys(), ["a", "b", "c", "d", "e"])

    def test_other_data_is_permanent(self) -> None:
        host = FakeHost()
        host.bucket.data["k"] = b"\xff not json"
        with self.assertRaises(Permanent) as caught:
            context(host).state().get("k")
        self.assertIn("state key `k` holds other data", str(caught.exception))

    def test_unencodable_value_is_permanent(self) -> None:
        with self.assertRaises(Permanent) as caught:
            context(FakeHost()).state().set("k", {1, 2})
        self.assertIn("cannot encode state key `k`", str(caught.exception))


class StoreErrorMappingTest(unittest.TestCase):
    def test_no_grant_is_permanent_and_says_how_to_grant(self) -> None:
        host = FakeHost(open_error=StoreError("access-denied"))
        with self.assertRaises(Permanent) as caught:
            context(host).state()
        self.assertIn("[tools.NAME.state]", str(caught.exception))

    def test_no_such_store_is_permanent(self) -> None:
        with self.assertRaises(Permanent):
            context(FakeHost(open_error=StoreError("no-such-store"))).state()

    def test_full_scope_is_the_callers_fault(self) -> None:
        for message in ("state-quota-exceeded: 1 MiB", "state-too-many-writes: 64"):
            with self.subTest(message):
                host = FakeHost(bucket=FakeBucket(fail=StoreError("other", message)))
                with self.assertRaises(InvalidInput) as caught:
                    context(host).state().set("k", 1)
                self.assertEqual(str(caught.exception), message)

    def test_other_store_failures_are_permanent(self) -> None:
        host = FakeHost(bucket=FakeBucket(fail=StoreError("other", "state store: disk full")))
        with self.assertRaises(Permanent) as caught:
            context(host).state().get("k")
        self.assertEqual(str(caught.exception), "state store: disk full")


if __name__ == "__main__":
    unittest.main()
