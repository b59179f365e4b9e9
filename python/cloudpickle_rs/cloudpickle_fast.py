"""``cloudpickle.cloudpickle_fast``, upstream's old name for ``cloudpickle.cloudpickle``:
the same module (``cloudpickle_rs.cloudpickle``) under that name."""

import sys

from . import cloudpickle as _mirror

sys.modules[__name__] = _mirror
