"""docs/protocol.md against the code: every field table equals its pydantic model, field by field.

The outside client (tests/outside_client/) trusts the document; this test makes sure the document
tells the truth: the same fields in the same order, the same types and the same required-ness, a
table for every message model, and the telemetry dictionary byte for byte.
"""
from __future__ import annotations

import enum
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from node.sync import protocol as p
from tests.outside_client.outside_client import parse_tables, parse_zdict

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
#: bases that never travel alone (their fields are in every table of their subclasses)
BASES = {"Wire", "Report", "SignedBody"}


def type_text(annotation: object) -> str:
    """A model field's type written as the document's legend writes types."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in present)
        return text + (" or null" if len(present) < len(args) else "")
    if origin in (list, dict):
        inner = type_text(args[-1])
        inner = f"({inner})" if " or " in inner else inner
        return f"{'array' if origin is list else 'object'} of {inner}"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is typing.Literal:
        return " or ".join(f'"{a}"' for a in args)
    simple = {str: "string", float: "number", int: "integer", bool: "boolean"}
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "string (" + ", ".join(m.value for m in annotation) + ")"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    if "AwareDatetime" in repr(annotation):
        return "string (ISO 8601 with zone)"
    raise AssertionError(f"no document spelling for {annotation!r}")


def wire_models() -> dict[str, type[BaseModel]]:
    return {name: obj for name, obj in vars(p).items() if isinstance(obj, type) and issubclass(obj, BaseModel)
            and obj.__module__ == p.__name__ and name not in BASES}


TABLES = parse_tables(DOC.read_text(encoding="utf-8"))


def test_every_message_model_has_a_table_and_every_table_a_model() -> None:
    assert set(wire_models()) - set(TABLES) == set(), "models without a table in docs/protocol.md"
    assert set(TABLES) - set(wire_models()) == set(), "tables in docs/protocol.md without a model"


@pytest.mark.parametrize("name", sorted(wire_models()))
def test_the_table_equals_the_model(name: str) -> None:
    model = wire_models()[name]
    documented = [(f.name, f.type, f.required) for f in TABLES[name].values()]
    actual = [(field, type_text(info.annotation), info.is_required()) for field, info in model.model_fields.items()]
    rows = "\n".join(f"| `{f}` | {t} | {'yes' if r else 'no'} | ... |" for f, t, r in actual)
    assert documented == actual, f"docs/protocol.md's table of {name} should read (meanings yours):\n{rows}"


def test_the_documents_telemetry_dictionary_is_the_codes() -> None:
    assert parse_zdict(DOC.read_text(encoding="utf-8")) == p.TELEMETRY_ZDICT


def test_the_documents_versions_are_the_codes() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"`PROTOCOL_VERSION = {p.PROTOCOL_VERSION}`" in text and f"`PROTOCOL_MINOR = {p.PROTOCOL_MINOR}`" in text
    assert text.splitlines()[0] == f"# Node ⇄ hub protocol, version {p.PROTOCOL_VERSION}.{p.PROTOCOL_MINOR}"
