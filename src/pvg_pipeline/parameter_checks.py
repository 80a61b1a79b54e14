"""Checking parameter dictionaries against pydantic models, with readable errors.

:class:`ParameterBlock` is the base of every parameter model (unknown keys and
booleans given for numbers are errors); :func:`parse_parameters` turns pydantic's
validation errors into one :class:`ParameterError` line per problem, naming the
parameter's path, the bad value and what is expected.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import click
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)


class ParameterError(click.ClickException, ValueError):
    """Invalid parameters: one line per problem, shown by ``kedro run`` as is."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"invalid parameter {problems[0]}")
        else:
            lines = "\n".join(f"  {problem}" for problem in problems)
            super().__init__(f"{len(problems)} invalid parameters:\n{lines}")


class ParameterBlock(BaseModel):
    """Base of every parameter model: unknown keys are errors that list valid ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(map(str, data)) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown key(s) {', '.join(map(repr, unknown))}; valid keys are "
                    f"{', '.join(cls.model_fields)}"
                )
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _reject_booleans_as_numbers(cls, value: Any, info: Any) -> Any:
        # pydantic's lax mode reads true/false as 1/0 for numbers: `seed: true`
        # would silently train seed 1.
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            annotation = cls.model_fields[info.field_name].annotation
            if not _accepts_bool(annotation):
                raise ValueError(
                    f"expected {_expected(annotation)}, not a boolean (true/false)"
                )
        return value


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field's type lets a boolean through as itself."""
    if annotation in (bool, Any, object):
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return any(isinstance(arg, bool) for arg in get_args(annotation))
    if origin is Annotated:
        return _accepts_bool(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_accepts_bool(arg) for arg in get_args(annotation))
    # Containers and models validate their own items; only scalars are numbers.
    return annotation not in (int, float, type(None))


def _expected(annotation: Any) -> str:
    args = get_args(annotation) if get_origin(annotation) else (annotation,)
    if float in args:
        return "a number"
    return "an integer" if int in args else "a value of another type"


def merge_parameters(target: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested update of a copy of ``target``, as Kedro applies runtime ``--params``."""
    merged = dict(target)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_parameters(merged[key], value)
        else:
            merged[key] = value
    return merged


Model = TypeVar("Model", bound=BaseModel)


def parse_parameters(model: type[Model], values: Any, path: str = "") -> Model:
    """Validate ``values`` as ``model`` or raise a readable :class:`ParameterError`.

    Parameters
    ----------
    model
        The pydantic model of the block.
    values
        The raw dictionary from Kedro (or an already-built model).
    path
        Dotted path of the block (``"data_generation"``), prefixed to every problem.
    """
    if isinstance(values, model):
        return values
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ParameterError(
            [_describe(problem, path) for problem in error.errors()]
        ) from None


def _describe(problem: Any, prefix: str) -> str:
    where = prefix
    for part in problem["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    where = where.lstrip(".") or "parameters"
    message = problem["msg"].removeprefix("Value error, ")
    if isinstance(problem.get("input"), dict | BaseModel):
        return f"{where}: {message}"
    return f"{where} = {problem['input']!r}: {message}"
