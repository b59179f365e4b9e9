//! Building reduce values: the tuples `reducer_override` returns to the C
//! pickler, `(callable, args, state, listitems, dictitems, state_setter)`
//! cut after their last item.

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::support::statics;

/// `NotImplemented`: the C pickler then goes on as it would without the hook.
pub fn not_implemented(py: Python<'_>) -> Bound<'_, PyAny> {
    py.NotImplemented().into_bound(py)
}

/// `(callable, args)`: the object is `callable(*args)`.
pub fn reduce<'py>(
    callable: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyTuple::new(args.py(), [callable, args.into_any()])?.into_any())
}

/// `(callable, args, state)`: then the unpickler's BUILD sets `state`.
pub fn reduce_with_state<'py>(
    callable: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    state: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyTuple::new(args.py(), [callable, args.into_any(), state])?.into_any())
}

/// `(callable, args, state, None, None, setter)`: the object is memoized
/// once made, then `setter(obj, state)` runs, so `state` may refer back to it.
pub fn reduce_with_setter<'py>(
    callable: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    state: Bound<'py, PyAny>,
    setter: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = args.py();
    let none = py.None().into_bound(py);
    Ok(PyTuple::new(
        py,
        [callable, args.into_any(), state, none.clone(), none, setter],
    )?
    .into_any())
}

/// `(type(obj), args)`: the object is rebuilt by calling its own type.
pub fn reduce_to_own_type<'py>(
    obj: &Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    reduce(obj.get_type().into_any(), args)
}

/// `(getattr, (owner, name))`: loads as the receiver's own attribute.
pub fn reduce_to_getattr<'py>(
    owner: Bound<'py, PyAny>,
    name: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    reduce(
        statics::builtin_getattr(py)?.clone(),
        PyTuple::new(py, [owner, name])?,
    )
}

/// `tuple(getattr(obj, name) for name in names)`.
pub fn attributes<'py, const N: usize>(
    obj: &Bound<'py, PyAny>,
    names: [&Bound<'py, PyString>; N],
) -> PyResult<Bound<'py, PyTuple>> {
    let values = names
        .into_iter()
        .map(|name| obj.getattr(name))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(obj.py(), values)
}
