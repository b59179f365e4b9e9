"""A package that only the sender can import (tests/ on its sys.path).

Used by the ``register_pickle_by_value`` tests: a receiver process started
without tests/ on its path cannot import it, so whatever it gets from here
must have travelled by value.
"""
