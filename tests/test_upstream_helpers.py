"""The private helpers downstream code imports from ``cloudpickle.cloudpickle``
give what upstream cloudpickle 3.1.2's give, on the same inputs, while
cloudpickle-rs computes them natively (with the code its own pickling uses)."""

import abc
import dataclasses
import enum
import inspect
import os.path
import sys
import types
import typing
import xml.dom.minidom
import xml.etree.ElementTree
import xml.parsers.expat

import pytest

from cloudpickle_rs import _native
from cloudpickle_rs import cloudpickle as mirror


@pytest.fixture(scope="module")
def upstream():
    module = pytest.importorskip("cloudpickle.cloudpickle")
    if getattr(module, "__cloudpickle_rs__", False) or module.__name__.startswith("cloudpickle_rs"):
        pytest.skip("cloudpickle is cloudpickle-rs here")
    return module


def test_the_mirror_uses_the_native_helpers():
    for name in ("_find_imported_submodules", "_extract_class_dict", "_get_bases", "_get_cell_contents"):
        assert getattr(mirror, name) is getattr(_native, name)


# --- _find_imported_submodules ---


def uses_submodules():
    # os is a module, not a package: os.path is not one of its submodules.
    return os.path.join, xml.etree.ElementTree.Element, xml.dom.minidom.parse, xml.parsers.expat


def uses_no_submodule():
    return os.getcwd, xml


DEPENDENCY_SETS = {
    "a package and a module": [os, xml],
    "several submodules": [xml],
    "a package twice": [xml, os, xml],
    "not modules": [1, "xml", None, xml.etree.ElementTree.Element],
    "modules that are not packages": [sys, types],
    "none": [],
}


@pytest.mark.parametrize("func", [uses_submodules, uses_no_submodule])
@pytest.mark.parametrize("dependencies", list(DEPENDENCY_SETS), ids=str)
def test_find_imported_submodules(upstream, func, dependencies):
    deps = DEPENDENCY_SETS[dependencies]
    theirs = upstream._find_imported_submodules(func.__code__, list(deps))
    ours = mirror._find_imported_submodules(func.__code__, iter(deps))
    assert type(ours) is list
    assert [m.__name__ for m in ours] == [m.__name__ for m in theirs]
    assert all(a is b for a, b in zip(ours, theirs))


def test_find_imported_submodules_finds_them():
    found = mirror._find_imported_submodules(uses_submodules.__code__, [xml, os])
    names = {module.__name__ for module in found}
    assert {"xml.etree.ElementTree", "xml.dom.minidom", "xml.parsers.expat"} <= names
    assert "posixpath" not in names


# --- _extract_class_dict ---


class Base:
    shared = "base"

    def method(self):
        return 1


class Child(Base):
    # The same object as the base's: left out. An equal one: kept.
    method = Base.method
    shared = "base" + ""
    zeta = 2
    alpha = 1


class Other:
    other = 3


class Both(Child, Other):
    other = Other.other
    own = [1]


class Abstract(abc.ABC):
    @abc.abstractmethod
    def run(self): ...


@dataclasses.dataclass
class Point:
    x: int = 0
    y: int = 0


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Slotted:
    __slots__ = ("a", "b")


T = typing.TypeVar("T")


class Box(typing.Generic[T]):
    pass


class IntBox(Box[int]):
    pass


class SubBox(IntBox):
    pass


CLASSES = [Base, Child, Both, Abstract, Point, Color, Slotted, Box, IntBox, SubBox, object, int, ValueError]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_extract_class_dict(upstream, cls):
    theirs = upstream._extract_class_dict(cls)
    ours = mirror._extract_class_dict(cls)
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        assert ours[name] is value or ours[name] == value, name


# --- _get_bases ---


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_get_bases(upstream, cls):
    assert mirror._get_bases(cls) is upstream._get_bases(cls)


# --- _get_cell_contents ---


def test_get_cell_contents(upstream):
    value = object()
    full, empty = types.CellType(value), types.CellType()
    assert upstream._get_cell_contents(full) is value
    assert mirror._get_cell_contents(full) is value
    assert upstream._get_cell_contents(empty) is upstream._empty_cell_value
    assert mirror._get_cell_contents(empty) is mirror._empty_cell_value
    # What upstream does with it: an empty cell again.
    with pytest.raises(ValueError):
        mirror._make_cell(mirror._get_cell_contents(empty)).cell_contents  # noqa: B018


# --- the reconstructors whose arguments the inspector and compat writer read by name ---


@pytest.mark.parametrize(
    "name",
    [
        "_make_function",
        "_make_skeleton_class",
        "_make_skeleton_enum",
        "_make_typevar",
        "dynamic_subimport",
        "_make_dict_keys",
        "_make_dict_values",
        "_make_dict_items",
    ],
)
def test_served_reconstructors_take_upstreams_arguments(upstream, name):
    def parameters(function):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    assert parameters(getattr(mirror, name)) == parameters(getattr(upstream, name))
