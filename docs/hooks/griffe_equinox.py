"""Griffe extension: the constructor signature of Equinox modules, found by static analysis.

An `equinox.Module` is a dataclass through its metaclass, which griffe's own dataclass support does not see: a module
without an explicit `__init__` would show no parameters. This extension writes the `__init__` the dataclass machinery
generates — the annotated fields in definition order, base classes first, with the `default` of `eqx.field(...)` —
leaving out `AbstractVar`/`AbstractClassVar` declarations (not fields) and classes that define `__init__` themselves.
"""

from typing import Any

import griffe

_MODULE = "equinox.Module"
_ABSTRACT = ("equinox.AbstractVar", "equinox.AbstractClassVar")
_FIELD = ("equinox.field", "dataclasses.field")


def _path(expr) -> str:
    return getattr(expr, "canonical_path", str(expr))


def _is_module(cls: griffe.Class) -> bool:
    try:
        classes = [cls, *cls.mro()]
    except ValueError:
        classes = [cls]
    return any(_path(base) == _MODULE for c in classes for base in c.bases)


def _field_default(attribute: griffe.Attribute):
    """(has_default, default) of a dataclass field."""
    value = attribute.value
    if isinstance(value, griffe.ExprCall) and _path(value.function) in _FIELD:
        for argument in value.arguments:
            if getattr(argument, "name", None) == "default":
                return True, argument.value
            if getattr(argument, "name", None) == "default_factory":
                return True, griffe.ExprCall(function=argument.value, arguments=[])
        return False, None
    return value is not None, value


def _fields(cls: griffe.Class) -> dict[str, griffe.Parameter]:
    out = {}
    for member in cls.members.values():
        if member.is_alias or not member.is_attribute or member.annotation is None:
            continue
        if "property" in member.labels:
            continue
        if any(_path(member.annotation).startswith(name) or str(member.annotation).startswith(name.replace("equinox", "eqx"))
               for name in _ABSTRACT):
            continue
        has_default, default = _field_default(member)
        out[member.name] = griffe.Parameter(member.name, annotation=member.annotation,
                                            kind=griffe.ParameterKind.positional_or_keyword,
                                            default=default if has_default else None)
    return out


def _set_init(cls: griffe.Class) -> None:
    try:
        mro = cls.mro()
    except ValueError:
        mro = []
    fields: dict[str, griffe.Parameter] = {}
    for parent in [*reversed(mro), cls]:
        for name, parameter in _fields(parent).items():
            fields[name] = parameter  # an override keeps the base class's position
    init = griffe.Function("__init__", lineno=0, endlineno=0, parent=cls, returns="None",
                           parameters=griffe.Parameters(
                               griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
                               *fields.values()))
    cls.set_member("__init__", init)


def _walk(obj, seen: set[str]) -> None:
    if obj.canonical_path in seen:
        return
    seen.add(obj.canonical_path)
    if obj.is_class:
        if "__init__" not in obj.members and _is_module(obj):
            _set_init(obj)
    for member in list(obj.members.values()):
        if not member.is_alias and (member.is_module or member.is_class):
            _walk(member, seen)


class EquinoxInit(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg, set())
