"""Write cofferdam tools in Python.

A tool is one function from a dataclass (or `TypedDict`) to anything JSON
can hold; `@tool` makes it this component's tool, and `cofferdam-py build
tool.py -o tool.wasm` packages it with CPython (through componentize-py)
into a WebAssembly component for the WIT world `tool` (`wit/tool.wit`).

```python
from dataclasses import dataclass
from cofferdam_guest import Context, InvalidInput, tool

@dataclass
class Input:
    \"\"\"Whom to greet.\"\"\"
    name: str
    \"\"\"The name to put in the greeting.\"\"\"

@tool
def hello(input: Input, ctx: Context) -> dict:
    \"\"\"Greets someone by name.\"\"\"
    if not input.name:
        raise InvalidInput("`name` must not be empty")
    ctx.log_info(f"greeting {input.name}")
    return {"greeting": f"Hello, {input.name}!"}
```

The input's JSON Schema is generated from the type hints; input that does
not match is answered with `invalid-input` before the function runs.
Exceptions map to the WIT `tool-error`: `InvalidInput`, `Transient`,
`RateLimited(ms)`, `Permanent`; OS errors by kind; anything else is
`permanent` with its type and message.

What this package does not do: grant capabilities. Files, the environment
and the network are whatever the host's policy for the tool allows.
"""

from .context import Context, Effect, Level
from .errors import InvalidInput, Permanent, RateLimited, SchemaError, ToolError, Transient
from .state import State
from .handler import tool

__all__ = [
    "tool",
    "Context",
    "Effect",
    "Level",
    "State",
    "ToolError",
    "InvalidInput",
    "Transient",
    "RateLimited",
    "Permanent",
    "SchemaError",
]

__version__ = "0.1.0"
