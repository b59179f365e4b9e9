"""Module-level functions of a local package, for pickling by value/reference."""

GREETING = "hello from mock_local_folder.mod"


def local_function():
    """Uses a module-level global."""
    return GREETING + "!"


def call_submodule_with_relative_import():
    """Imports a sibling subpackage relatively, inside its body."""
    from . import subfolder
    from .subfolder import submod

    return subfolder.__name__, submod.submod_function()


class LocalClass:
    def __init__(self, value):
        self.value = value

    def method(self, extra):
        return self.value + extra


def function_without_module():
    return "found without __module__"


# A function whose __module__ is None but that is reachable as an attribute of
# this (imported) module: cloudpickle searches sys.modules for it and pickles
# it by reference.
function_without_module.__module__ = None
