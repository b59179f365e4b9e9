"""A submodule two levels down, for register_pickle_by_value of a package."""

SUB_CONSTANT = 7


def submod_function():
    return "submod says %d" % (SUB_CONSTANT * 6)
