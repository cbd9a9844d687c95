"""config/README.md from config/schema.yaml: every key with its type, default, allowed values and description.

    python -m cntem.schema_doc config/schema.yaml config/README.md

The schema is the one place a key is described; tests/test_schema_doc.py checks that the committed
config/README.md is what this writes.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

COMMAND = "python -m cntem.schema_doc config/schema.yaml config/README.md"


@dataclass(frozen=True)
class Key:
    """One documented key: its dotted path and the schema node that defines it."""

    path: str
    node: dict
    required: bool


def keys(node: dict, prefix: str = "") -> list[Key]:
    """The keys under an object node, depth first in schema order: an object with `properties` is walked
    into, any other node is one key."""
    found = []
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        if "properties" in child:
            found += keys(child, f"{path}.")
        else:
            found.append(Key(path, child, name in required))
    return found


def describe_type(node: dict) -> str:
    if "oneOf" in node:
        return " or ".join(describe_type(alternative) for alternative in node["oneOf"])
    if "enum" in node:
        return "string"
    kinds = node.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    names = []
    for kind in kinds:
        if kind == "array":
            names.append(f"list of {describe_type(node.get('items', {}))}")
        elif kind == "object":
            names.append("mapping")
        else:
            names.append(kind)
    return " or ".join(names)


def flow(value) -> str:
    """A value as it is written in a YAML config: `null`, `[4class]`, `{}`."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()


def describe_allowed(node: dict) -> str:
    """The values a node accepts beyond its type: enums, patterns, bounds, sizes, names of keys."""
    parts = []
    if "oneOf" in node:
        parts += [describe_allowed(alternative) for alternative in node["oneOf"]]
    if "enum" in node:
        parts.append(", ".join(f"`{flow(value)}`" for value in node["enum"]))
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    for bound, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if bound in node:
            parts.append(f"{sign} {node[bound]}")
    if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems"):
        parts.append(f"exactly {node['minItems']} items")
    elif "minItems" in node:
        parts.append(f"at least {node['minItems']} item{'s' if node['minItems'] > 1 else ''}")
    if node.get("uniqueItems"):
        parts.append("no repeats")
    items = node.get("items")
    if items:
        allowed = describe_allowed(items)
        if allowed:
            parts.append(f"items: {allowed}")
    if "propertyNames" in node:
        parts.append(f"keys: {describe_allowed(node['propertyNames'])}")
    values = node.get("additionalProperties")
    if isinstance(values, dict) and "properties" not in values:
        parts.append(f"values: {describe_type(values)}")
    return "; ".join(part for part in parts if part)


def describe_default(key: Key) -> str:
    if "default" in key.node:
        return f"`{flow(key.node['default'])}`"
    return "required" if key.required else "—"


def prose(text: str) -> str:
    """Schema text as one Markdown line: `<split>` and the like kept visible, not taken for HTML."""
    return " ".join(str(text).split()).replace("<", "&lt;")


def cell(text: str) -> str:
    """Text in one Markdown table cell: one line, pipes escaped."""
    return prose(text).replace("|", "\\|")


def render(schema: dict) -> str:
    """config/README.md: the schema's description, then one section per top-level key."""
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from config/schema.yaml by `{COMMAND}`; edit the schema, not this file. -->",
        "",
        prose(schema["description"]),
        "",
    ]
    every_key = keys(schema)
    for name, node in schema["properties"].items():
        lines += [f"## `{name}`", ""]
        if "properties" in node and node.get("description"):
            lines += [prose(node["description"]), ""]
        lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        for key in (k for k in every_key if k.path == name or k.path.startswith(f"{name}.")):
            lines.append(f"| `{key.path}` | {cell(describe_type(key.node))} | {cell(describe_default(key))} "
                         f"| {cell(describe_allowed(key.node))} | {cell(key.node.get('description', ''))} |")
        lines.append("")
    return "\n".join(lines)


def undescribed(schema: dict) -> list[str]:
    """Keys (and sections) of the schema without a description."""
    sections = [name for name, node in schema["properties"].items()
                if "properties" in node and not node.get("description")]
    return sections + [key.path for key in keys(schema) if not key.node.get("description")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write config/README.md from config/schema.yaml.")
    parser.add_argument("schema", type=Path, help="config/schema.yaml")
    parser.add_argument("out", type=Path, help="the Markdown file to write, e.g. config/README.md")
    args = parser.parse_args(argv)
    args.out.write_text(render(yaml.safe_load(args.schema.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
