"""`cofferdam-py build` up to the point where componentize-py runs: finding
the WIT, refusing a missing or wrong componentize-py, failing on a bad tool
module with the field's name, and staging the entry module."""

import os
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path
from unittest import mock

from cofferdam_guest import build, handler

REPO = Path(__file__).resolve().parents[3]


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


class BuildTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.saved_path = list(sys.path)

    def tearDown(self) -> None:
        sys.path[:] = self.saved_path
        for name in [m for m in sys.modules if m.startswith("tool_under_test")]:
            del sys.modules[name]
        handler._reset_registry()
        self.tmp.cleanup()


class FindWitTest(BuildTestCase):
    def test_the_checkout_wit_is_found(self) -> None:
        with mock.patch.dict(os.environ, {}, clear=False):
            os.environ.pop("COFFERDAM_WIT", None)
            self.assertEqual(build.find_wit(), (REPO / "wit").resolve())

    def test_explicit_dir_without_tool_wit_is_an_error(self) -> None:
        with self.assertRaises(build.BuildError) as caught:
            build.find_wit(str(self.dir))
        self.assertIn("has no tool.wit", str(caught.exception))

    def test_another_package_version_is_refused(self) -> None:
        (self.dir / "tool.wit").write_text("package cofferdam:tool@0.2.0;\n")
        with self.assertRaises(build.BuildError) as caught:
            build.find_wit(str(self.dir))
        self.assertIn("is not package cofferdam:tool@0.1.0", str(caught.exception))


class ComponentizePyTest(unittest.TestCase):
    def test_missing_componentize_py_says_how_to_install_it(self) -> None:
        with mock.patch("importlib.util.find_spec", return_value=None):
            with self.assertRaises(build.BuildError) as caught:
                build._componentize_py()
        self.assertIn("componentize-py is not installed", str(caught.exception))
        self.assertIn("pip install componentize-py==0.25.1", str(caught.exception))

    def test_another_version_is_refused(self) -> None:
        with mock.patch("importlib.util.find_spec", return_value=object()), mock.patch(
            "importlib.metadata.version", return_value="0.13.0"
        ):
            with self.assertRaises(build.BuildError) as caught:
                build._componentize_py()
        self.assertIn("componentize-py 0.13.0 is installed, but this SDK is pinned to 0.25.1", str(caught.exception))

    def test_main_prints_the_error_and_exits_1(self) -> None:
        with mock.patch("importlib.util.find_spec", return_value=None), mock.patch("sys.stderr") as err:
            self.assertEqual(build.main(["build", "x.py", "-o", "x.wasm"]), 1)
        printed = "".join(str(c.args[0]) for c in err.write.call_args_list)
        self.assertIn("error: componentize-py is not installed", printed)


class LoadToolTest(BuildTestCase):
    def test_unsupported_type_fails_the_build_naming_field_and_type(self) -> None:
        path = write_module(
            self.dir,
            "tool_under_test_bad",
            """
            from dataclasses import dataclass
            from cofferdam_guest import tool

            @dataclass
            class Cat:
                name: str

            @dataclass
            class Dog:
                name: str

            @dataclass
            class Input:
                pet: Cat | Dog

            @tool
            def adopt(input: Input) -> None:
                "Adopts a pet."
            """,
        )
        with self.assertRaises(build.BuildError) as caught:
            build.load_tool(path)
        message = str(caught.exception)
        self.assertIn(str(path), message)
        self.assertIn("tool `adopt`: parameter `input`: field `Input.pet` has type Cat | Dog", message)
        self.assertIn("only Optional[T]", message)

    def test_module_without_tool_fails(self) -> None:
        path = write_module(self.dir, "tool_under_test_empty", "x = 1\n")
        with self.assertRaises(build.BuildError) as caught:
            build.load_tool(path)
        self.assertIn("no tool is defined", str(caught.exception))

    def test_import_error_is_reported(self) -> None:
        path = write_module(self.dir, "tool_under_test_broken", "import not_a_module_anywhere\n")
        with self.assertRaises(build.BuildError) as caught:
            build.load_tool(path)
        self.assertIn("importing the module failed: ModuleNotFoundError", str(caught.exception))

    def test_good_tool_loads_and_http_use_is_seen(self) -> None:
        path = write_module(
            self.dir,
            "tool_under_test_http",
            """
            from dataclasses import dataclass
            from cofferdam_guest import tool, http

            @dataclass
            class Input:
                url: str

            @tool
            def fetch(input: Input) -> int:
                "Fetches."
                return http.get(input.url).status
            """,
        )
        spec, uses_http = build.load_tool(path)
        self.assertEqual(spec.name, "fetch")
        self.assertTrue(uses_http)
        self.assertFalse((self.dir / "__pycache__").exists(), "no bytecode beside the tool")

    def test_tool_without_http_targets_the_plain_world(self) -> None:
        path = write_module(
            self.dir,
            "tool_under_test_plain",
            """
            from dataclasses import dataclass
            from cofferdam_guest import tool

            @dataclass
            class Input:
                n: int

            @tool
            def double(input: Input) -> int:
                "Doubles."
                return 2 * input.n
            """,
        )
        spec, uses_http = build.load_tool(path)
        self.assertEqual(spec.name, "double")
        self.assertFalse(uses_http)

    def test_module_names_that_clash_are_refused(self) -> None:
        for name in ("wit_world", "cofferdam_guest", "my-tool"):
            with self.subTest(name), self.assertRaises(build.BuildError):
                build._module_name(Path(f"{name}.py"))


class StageTest(BuildTestCase):
    def test_plain_tool_targets_the_world_tool_of_the_checkout(self) -> None:
        wit = build.find_wit(str(REPO / "wit"))
        wit_path, world, flags = build._stage(self.dir, "mytool", wit, uses_http=False)
        self.assertEqual((wit_path, world), (wit, "tool"))
        self.assertEqual(flags, ["--import-interface-name", "cofferdam:tool/types@0.1.0=tool_types"])
        entry = (self.dir / "app" / "_cofferdam_app.py").read_text()
        self.assertIn("import mytool", entry)
        self.assertIn("from cofferdam_guest._component import WitWorld", entry)
        self.assertTrue((self.dir / "app" / "cofferdam_guest" / "_component.py").is_file())
        self.assertFalse((self.dir / "app" / "cofferdam_guest" / "wit").exists())
        self.assertTrue((self.dir / "venv" / "lib" / "site-packages").is_dir())

    def test_http_tool_gets_the_tool_http_world_with_the_checkout_contract(self) -> None:
        wit = build.find_wit(str(REPO / "wit"))
        wit_path, world, flags = build._stage(self.dir, "mytool", wit, uses_http=True)
        self.assertEqual(world, "cofferdam:python-guest/tool-http@0.1.0")
        self.assertIn("wasi:http/types@0.2.12=http_types", flags)
        self.assertEqual(
            (wit_path / "deps" / "cofferdam-tool" / "tool.wit").read_text(), (wit / "tool.wit").read_text()
        )
        self.assertTrue((wit_path / "deps" / "keyvalue" / "store.wit").is_file())
        self.assertTrue((wit_path / "deps" / "http.wit").is_file())


if __name__ == "__main__":
    unittest.main()
