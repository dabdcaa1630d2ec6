"""storage/keys.py: the one place keys are built, and docs/REDIS.md, the one place they are described."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from storage.keys import Keys

LAYOUT = Path(__file__).resolve().parent.parent / "docs" / "REDIS.md"
# A row of the layout table: | `key` | type | `Keys.builder` | content |
ROW = re.compile(r"^\| `([^`]+)` \| [^|]+ \| `Keys\.([a-z_]+)` \|", re.M)


def documented() -> dict[str, str]:
    """{builder name: the key it builds, as docs/REDIS.md writes it}."""
    return {builder: key for key, builder in ROW.findall(LAYOUT.read_text())}


def builders() -> dict[str, str]:
    """{builder name: its key with prefix P and each argument shown as <its parameter name>}."""
    keys = Keys("P")
    built = {}
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if not name.startswith("_"):
            parameters = inspect.signature(method).parameters
            built[name] = method(*(f"<{parameter}>" for parameter in parameters))
    return built


def test_the_layout_document_describes_every_key_builder_and_nothing_else():
    assert sorted(documented()) == sorted(builders())


@pytest.mark.parametrize("builder", sorted(builders()))
def test_each_documented_key_is_the_key_its_builder_makes(builder):
    assert documented().get(builder) == builders()[builder]


def test_the_layout_check_notices_a_key_that_drifted(monkeypatch):
    """rq's drifted `rq:job::<id>:dependencies` is the failure this guards against."""
    monkeypatch.setattr(Keys, "session", lambda self, session_id: f"{self.prefix}::session:{session_id}")
    assert documented()["session"] != builders()["session"]
