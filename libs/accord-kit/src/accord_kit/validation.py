"""protovalidate with native checks for the standard rules Accord's contracts use.

protovalidate 1.x evaluates every standard rule (`string.max_len`, `int32.gte_lte`, ...) as
a CEL program on cel-python's tree-walking interpreter: about 0.25 ms per rule, 4-5 ms for
one CreateJobRequest, the largest cost of a call. Here each such rule, as protovalidate
compiles it, gets a plain Python predicate run first. The predicate only ever says "passes";
whenever it cannot (a violation, or anything it does not handle), the rule's own CEL program
runs and decides, so field paths, rule ids and messages are protovalidate's, byte for byte.
Rules without a predicate, custom CEL included, run as CEL. When every rule of a field
passes on its raw value, the value is not converted to CEL at all: for a repeated field of
messages that conversion cost more than all the rest. `tests/test_validation.py` checks
both paths agree on every request message of the contracts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sized
from datetime import timedelta
from typing import Any

import protovalidate
import re2  # type: ignore[import-untyped]
from celpy.celtypes import BoolType, StringType
from google.protobuf.message import Message
from protovalidate.internal import rules as _rules

Predicate = Callable[[Any, Any], bool]
"""(value, the field's rules message) -> True when the rule certainly passes."""

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _has(rules: Any, name: str) -> bool:
    return bool(rules.HasField(name))


def _bound(rules: Any, name: str) -> Any:
    value = getattr(rules, name)
    return value.ToTimedelta() if hasattr(value, "ToTimedelta") else value


def _ranges(kind: str) -> dict[str, Predicate]:
    """The `gte`/`lte` family, with the exact conditions of validate.proto's expressions."""
    nan: Callable[[Any], bool] = math.isnan if kind in ("double", "float") else lambda _: False
    if kind == "duration":
        number: Callable[[Any], Any] = lambda v: v if isinstance(v, timedelta) else None  # noqa: E731
    else:
        number = lambda v: v if isinstance(v, int | float) else None  # noqa: E731

    def rule(violated: Callable[[Any, Any], bool]) -> Predicate:
        def passes(value: Any, rules: Any) -> bool:
            this = number(value)
            return this is not None and not nan(this) and not violated(this, rules)

        return passes

    def gte(r: Any) -> Any:
        return _bound(r, "gte")

    def lt(r: Any) -> Any:
        return _bound(r, "lt")

    def lte(r: Any) -> Any:
        return _bound(r, "lte")

    return {
        f"{kind}.gte": rule(lambda t, r: not _has(r, "lt") and not _has(r, "lte") and t < gte(r)),
        f"{kind}.gte_lt": rule(
            lambda t, r: _has(r, "lt") and lt(r) >= gte(r) and (t >= lt(r) or t < gte(r))
        ),
        f"{kind}.gte_lt_exclusive": rule(
            lambda t, r: _has(r, "lt") and lt(r) < gte(r) and lt(r) <= t < gte(r)
        ),
        f"{kind}.gte_lte": rule(
            lambda t, r: _has(r, "lte") and lte(r) >= gte(r) and (t > lte(r) or t < gte(r))
        ),
        f"{kind}.gte_lte_exclusive": rule(
            lambda t, r: _has(r, "lte") and lte(r) < gte(r) and lte(r) < t < gte(r)
        ),
        f"{kind}.lte": rule(lambda t, r: not _has(r, "gte") and not _has(r, "gt") and t > lte(r)),
    }


def _sized(check: Callable[[int, Any], bool], kinds: tuple[type[Sized], ...]) -> Predicate:
    return lambda value, rules: isinstance(value, kinds) and check(len(value), rules)


def _pattern(value: Any, rules: Any) -> bool:
    return isinstance(value, str) and re2.search(rules.pattern, value) is not None


def _uuid(value: Any, rules: Any) -> bool:
    return isinstance(value, str) and (not rules.uuid or value == "" or bool(_UUID.match(value)))


PREDICATES: dict[str, Predicate] = {
    "string.max_len": _sized(lambda n, r: n <= r.max_len, (str,)),
    "string.min_len": _sized(lambda n, r: n >= r.min_len, (str,)),
    "bytes.max_len": _sized(lambda n, r: n <= r.max_len, (bytes,)),
    "repeated.max_items": _sized(lambda n, r: n <= r.max_items, (list,)),
    "repeated.min_items": _sized(lambda n, r: n >= r.min_items, (list,)),
    "map.max_pairs": _sized(lambda n, r: n <= r.max_pairs, (dict,)),
    "string.pattern": _pattern,
    "string.uuid": _uuid,
    "string.uuid_empty": lambda v, r: isinstance(v, str) and (not r.uuid or v != ""),
    "string.in": lambda v, r: isinstance(v, str) and v in getattr(r, "in"),
    "enum.not_in": lambda v, r: isinstance(v, int) and v not in r.not_in,
    **_ranges("int32"),
    **_ranges("int64"),
    **_ranges("double"),
    **_ranges("duration"),
}


class _NativeFirst:
    """Stands in for one rule's CEL program: the predicate, else the program itself."""

    def __init__(self, predicate: Predicate, rules: Message, program: Any, passed: Any) -> None:
        self._predicate = predicate
        self._rules = rules
        self._program = program
        self._passed = passed

    def evaluate(self, activation: dict[str, Any]) -> Any:
        try:
            if self._predicate(activation.get("this"), self._rules):
                return self._passed
        except Exception:  # noqa: S110 - anything unexpected is for CEL to decide
            pass
        return self._program.evaluate(activation)


def _passed_value(rule_id: str) -> Any:
    # The uuid rules are boolean expressions; every other standard rule yields '' to pass.
    return BoolType(True) if rule_id.startswith("string.uuid") else StringType("")


_native = True
_original_add_rule = _rules.CelRules.add_rule


def _add_rule(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_add_rule(self, *args, **kwargs)
    compiled = self._cel[-1]
    predicate = PREDICATES.get(compiled.rule.id)
    if _native and predicate is not None and self._rules is not None:
        compiled.runner = _NativeFirst(
            predicate, self._rules, compiled.runner, _passed_value(compiled.rule.id)
        )


def _native_view(value: Any) -> Any:
    """A field's raw value as the predicates read it: repeated fields as lists, maps as
    dicts, scalars as they are. Messages (durations included) fail their predicates, so
    those fields fall back to CEL."""
    if hasattr(value, "items") and hasattr(value, "keys"):
        return dict(value)
    if hasattr(value, "__len__") and not isinstance(value, str | bytes):
        return list(value)
    return value


def _all_pass_natively(rules: Any, value: Any) -> bool:
    """Whether every CEL rule of a field certainly passes, judged on the raw value alone."""
    if not _native:
        return False
    view = None
    for cel in rules._cel:
        runner = cel.runner
        if not isinstance(runner, _NativeFirst):
            return False
        if view is None:
            view = _native_view(value)
        try:
            if not runner._predicate(view, runner._rules):
                return False
        except Exception:
            return False
    return True


_original_field_validate = _rules.FieldRules.validate


def _field_validate(self: Any, ctx: Any, message: Message) -> None:
    """FieldRules.validate, without converting the value to CEL when every rule of the
    field passes on the raw value: converting a repeated field of messages (500 task
    completions, say) to CEL cost more than all the rest of a call."""
    if _rules._is_empty_field(message, self._field) and (self._required or self._ignore_empty):
        _original_field_validate(self, ctx, message)
        return
    value = getattr(message, self._field.name)
    if not _all_pass_natively(self, value):
        _original_field_validate(self, ctx, message)
        return
    sub_ctx = ctx.sub_context()
    self._validate_value(sub_ctx, value)
    if sub_ctx.has_errors():
        sub_ctx.add_field_path_element(_rules._field_to_element(self._field))
        ctx.add_errors(sub_ctx)


_original_validate_item = _rules.FieldRules.validate_item


def _validate_item(self: Any, ctx: Any, value: Any, *, for_key: bool = False) -> None:
    if not _all_pass_natively(self, value):
        _original_validate_item(self, ctx, value, for_key=for_key)
        return
    self._validate_value(ctx, value, for_key=for_key)


def _enum_validate_item(self: Any, ctx: Any, value: Any, *, for_key: bool = False) -> None:
    """`defined_only` on the items of a repeated enum (or a map's enum values), which
    protovalidate 1.1.0 checks only on singular fields: `states: [99]` passed."""
    _validate_item(self, ctx, value, for_key=for_key)
    if self._defined_only and value not in self._field.enum_type.values_by_number:
        ctx.add(
            _rules.Violation(
                rule=_rules.EnumRules._defined_only_rule_path,
                rule_value=True,
                rule_id="enum.defined_only",
                message="value must be one of the defined enum values",
                for_key=for_key,
            )
        )


# protovalidate is pinned (==1.1.0): this is the one place its internals are touched.
_rules.CelRules.add_rule = _add_rule  # type: ignore[method-assign]
_rules.FieldRules.validate = _field_validate  # type: ignore[method-assign]
_rules.FieldRules.validate_item = _validate_item  # type: ignore[method-assign,assignment]
_rules.EnumRules.validate_item = _enum_validate_item  # type: ignore[method-assign,assignment]


def validator(*, native: bool = True) -> protovalidate.Validator:
    """A validator; `native=False` keeps every rule on CEL (the reference, for tests).

    Each validator compiles a message type's rules on its first validation of that type,
    under its own setting.
    """
    return _Validator(native)


class _Validator(protovalidate.Validator):
    def __init__(self, native: bool) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._native = native

    def collect_violations(self, message: Message, *, fail_fast: bool = False) -> list[Any]:
        global _native  # noqa: PLW0603 - read by _add_rule while this call compiles rules
        previous, _native = _native, self._native
        try:
            return list(super().collect_violations(message, fail_fast=fail_fast))
        finally:
            _native = previous
