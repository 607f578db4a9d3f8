"""`toolbox <verb> <method> --help`: the method's own options, each with its type, the recipe key it
sets and its value in the recipe the command would start from, read from the method's registration
and recipe schema (built-in and third-party methods alike; no torch is imported)."""

from __future__ import annotations

import typing

import click

from ..errors import UsageError


class MethodCommand(click.Command):
    """A run verb whose help lists the options of the method named on its command line."""

    def parse_args(self, ctx, args):
        ctx.meta["raw_args"] = list(args)  # --help is handled while parsing, before METHOD has a value
        return super().parse_args(ctx, args)

    def format_options(self, ctx, formatter):
        super().format_options(ctx, formatter)
        try:
            section = method_section(self, ctx)
        except (UsageError, click.ClickException):
            return  # a misspelt method: running the command names the valid ones
        if section:
            title, rows = section
            with formatter.section(title):
                formatter.write_dl(rows)


def method_section(command, ctx) -> tuple[str, list[tuple[str, str]]] | None:
    from .. import plugins, recipes
    from .common import parse_extra

    parsed, _, _ = command.make_parser(ctx).parse_args(args=list(ctx.meta.get("raw_args", [])))
    # what the user typed; click marks the absent ones with a sentinel object
    opts = {k: v for k, v in parsed.items() if isinstance(v, (str, list, tuple))}
    name = opts.get("method_name") or "dc" if command.name == "condense" else opts.get("method")
    if not name:
        return None
    method = plugins.load().registry.method(name, command.name)
    if not method.options:
        return None
    values = parse_extra([a for a in opts.get("extra") or () if a not in ("-h", "--help")], method.options)
    if command.name == "condense" and opts.get("dataset"):
        values["dataset"] = opts["dataset"]
    ref = opts.get("recipe")
    if ref is None and method.choose_recipe is not None:
        ref = next((r for r in method.choose_recipe(values) if recipes.recipe_exists(r)), None)
    ref = ref or method.default_recipe
    by_key = {k.replace("-", "_"): o for k, o in method.options.items()}
    typed = [f"{by_key[k].key}={'true' if v is True else v}" for k, v in values.items() if k in by_key]
    try:
        recipe, _ = recipes.load_recipe(method, ref, typed + list(opts.get("overrides") or ()))
    except UsageError:
        recipe = None
    schema = method.recipe_model()
    rows = []
    for option_name, option in sorted(method.options.items()):
        kind = "" if option.flag else f" {type_name(schema, option.key)}"
        shown = f"[{option.key}" + (f"; now {value_at(recipe, option.key)!r}" if recipe is not None else "") + "]"
        rows.append((f"--{option_name}{kind}", f"{option.help} {shown}".strip()))
    return f"Options of {method.name} [recipe key; now = its value in this command's recipe, {ref or 'the defaults'}]", rows


def type_name(schema, key: str) -> str:
    """INTEGER, FLOAT, BOOLEAN, TEXT or [a|b|c] for the field at dotted ``key`` of ``schema``."""
    from ..recipes import _field_at

    field = _field_at(schema, key.split("."))
    return _describe(field.annotation) if field is not None else "VALUE"


def _describe(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin is typing.Literal:
        return "[" + "|".join(str(a) for a in args) + "]"
    if args and origin is not list:  # Optional / unions: the non-None members
        members = [_describe(a) for a in args if a is not type(None)]
        return members[0] if len(set(members)) == 1 else "|".join(dict.fromkeys(members))
    return {int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", str: "TEXT"}.get(annotation, "VALUE")


def value_at(recipe, key: str):
    value = recipe
    for part in key.split("."):
        value = getattr(value, part, None)
    return value
