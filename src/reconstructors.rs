//! The load-side callables our pickles name, declared once.
//!
//! A pickle names one global of ours, [`Rebuild`] (`cloudpickle_rs.rebuild_v2`,
//! the format in its name), and reaches every reconstructor through it: the
//! first call of a reconstructor in a dump is `rebuild_v2(number, *args)`
//! (two bytes more than a direct call); from its second call on, the
//! reconstructor itself is called, looked up once as `rebuild_v2(name)` and
//! memoized (a reduction of its own, paid back over many calls). Each global
//! a pickle names costs the pickler an import. State setters, which the
//! unpickler calls with `(obj, state)`, are always looked up by name. Each
//! kind registers its reconstructors into this table when the module is
//! imported ([`add`]); the table depends on no kind.

use ahash::AHashMap;
use pyo3::exceptions::PySystemError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyModule, PyString, PyTuple};

use crate::ffi;
use crate::format;
use crate::support::dump;
use crate::support::names;
use crate::support::reduce::{not_implemented, reduce};
use crate::support::statics;

/// Declares the reconstructors: one variant and one name each. The order
/// numbers them in pickles: append only (renumbering is a new format).
macro_rules! reconstructors {
    ($($variant:ident = $name:literal,)*) => {
        /// A reconstructor of ours, by the name pickles use for it.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum Reconstructor {
            $($variant,)*
        }

        impl Reconstructor {
            /// Every reconstructor, in declaration order.
            pub const ALL: &'static [Reconstructor] = &[$(Reconstructor::$variant,)*];

            /// The name pickles call it by (and the module exports it under).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reconstructor::$variant => $name,)*
                }
            }
        }
    };
}

reconstructors! {
    MakeCode = "make_code",
    MakeFunction = "make_function",
    FunctionSetstate = "function_setstate",
    MakeCell = "make_cell",
    CellSet = "cell_set",
    MakeMethod = "make_method",
    Subimport = "subimport",
    MakeModule = "make_module",
    ModuleSetstate = "module_setstate",
    BuiltinType = "builtin_type",
    MakeTypeParameter = "make_type_parameter",
    MakeClass = "make_class",
    MakeEnum = "make_enum",
    ClassSetstate = "class_setstate",
    ClassDictItem = "class_dict_item",
    MakeDictView = "make_dict_view",
    DataclassFieldType = "dataclass_field_type",
    MakeException = "make_exception",
    MakeTraceback = "make_traceback",
    MakeTextFile = "make_text_file",
    MakeLruCache = "make_lru_cache",
    MakeSingledispatch = "make_singledispatch",
    MakeSingledispatchmethod = "make_singledispatchmethod",
    MakeContextVar = "make_context_var",
}

struct Table {
    /// By `Reconstructor as usize`.
    callables: Vec<Py<PyAny>>,
    /// By `Reconstructor as usize`.
    stand_ins: Vec<Py<PyAny>>,
    /// Each reconstructor's address -> its name (canonical, see `names`).
    names_by_address: AHashMap<usize, Py<PyString>>,
    /// The one [`Rebuild`].
    rebuild: Py<PyAny>,
    /// Its global name, `format::GLOBAL_NAME`.
    global_name: Py<PyString>,
}

static TABLE: PyOnceLock<Table> = PyOnceLock::new();

/// Adds `function`, the kind's implementation of `which`, to the module.
pub fn add(
    m: &Bound<'_, PyModule>,
    which: Reconstructor,
    function: Bound<'_, pyo3::types::PyCFunction>,
) -> PyResult<()> {
    let name = function.getattr(pyo3::intern!(m.py(), "__name__"))?;
    if !name.eq(which.name())? {
        return Err(PySystemError::new_err(format!(
            "reconstructor {:?} registered as {name}",
            which.name()
        )));
    }
    m.add_function(function)
}

/// Fills the table from the module once every kind has added its
/// reconstructors, and adds [`Rebuild`]'s one instance, [`reconstructor`],
/// `_reconstructor_of` and `RECONSTRUCTORS` (their names, by number).
pub fn finish(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(reconstructor, m)?)?;
    m.add_function(wrap_pyfunction!(reconstructor_of, m)?)?;
    let names = Reconstructor::ALL.iter().map(|r| r.name());
    m.add("RECONSTRUCTORS", PyTuple::new(py, names)?)?;
    let mut callables = Vec::with_capacity(Reconstructor::ALL.len());
    let mut stand_ins = Vec::with_capacity(Reconstructor::ALL.len());
    let mut names_by_address = AHashMap::new();
    for which in Reconstructor::ALL {
        let function = m.getattr(which.name())?;
        let name = names::canonical(PyString::new(py, which.name()).into_any())?;
        names_by_address.insert(
            function.as_ptr() as usize,
            name.cast_into::<PyString>()?.unbind(),
        );
        callables.push(function.unbind());
        stand_ins.push(Py::new(py, StandIn { which: *which })?.into_any());
    }
    let rebuild = Py::new(py, Rebuild)?.into_any();
    m.add(format::GLOBAL_NAME, rebuild.bind(py))?;
    let table = Table {
        callables,
        stand_ins,
        names_by_address,
        rebuild,
        global_name: PyString::intern(py, format::GLOBAL_NAME).unbind(),
    };
    // A second import of the module (subinterpreter, reload) keeps the first table.
    let _ = TABLE.set(py, table);
    Ok(())
}

fn table(py: Python<'_>) -> PyResult<&Table> {
    TABLE
        .get(py)
        .ok_or_else(|| PySystemError::new_err("cloudpickle_rs's reconstructors are not registered"))
}

/// The reconstructor `which` as a reduction names it, called directly or as
/// a state setter: its [`StandIn`], which pickles as `rebuild_v2(name)`.
pub fn get(py: Python<'_>, which: Reconstructor) -> PyResult<&Bound<'_, PyAny>> {
    Ok(table(py)?.stand_ins[which as usize].bind(py))
}

/// The callable and arguments of a reduction that loads as `which(*fields)`:
/// `(rebuild_v2, (number, *fields))` for the first call of `which` in the
/// dump in progress, else `(stand-in, fields)` (see the module's doc).
pub fn call<'py, F>(
    py: Python<'py>,
    which: Reconstructor,
    fields: F,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)>
where
    F: IntoIterator<Item = Bound<'py, PyAny>>,
    F::IntoIter: ExactSizeIterator,
{
    if first_call_in_dump(which) {
        numbered(py, which, fields)
    } else {
        Ok((get(py, which)?.clone(), PyTuple::new(py, fields)?))
    }
}

/// `(rebuild_v2, (number, *fields))`.
fn numbered<'py, F>(
    py: Python<'py>,
    which: Reconstructor,
    fields: F,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)>
where
    F: IntoIterator<Item = Bound<'py, PyAny>>,
    F::IntoIter: ExactSizeIterator,
{
    let number = (which as usize).into_pyobject(py)?.into_any();
    let args = PyTuple::new(
        py,
        Prepended {
            first: Some(number),
            rest: fields.into_iter(),
        },
    )?;
    Ok((table(py)?.rebuild.bind(py).clone(), args))
}

/// `first`, then `rest`, knowing its length (what `PyTuple::new` needs).
struct Prepended<T, I> {
    first: Option<T>,
    rest: I,
}

impl<T, I: ExactSizeIterator<Item = T>> Iterator for Prepended<T, I> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.first.take().or_else(|| self.rest.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self.len();
        (len, Some(len))
    }
}

impl<T, I: ExactSizeIterator<Item = T>> ExactSizeIterator for Prepended<T, I> {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }
}

/// `(stand-in, args)`: the reduce value of `which(*args)` when it is not
/// the first call of `which` in the dump (see [`numbered_if_first`]).
pub fn reduce_to_stand_in(
    which: Reconstructor,
    args: Bound<'_, PyTuple>,
) -> PyResult<Bound<'_, PyAny>> {
    reduce(get(args.py(), which)?.clone(), args)
}

/// `reduced`, a [`reduce_to_stand_in`] value kept from earlier dumps, or
/// its numbered form for the first call of `which` in this dump.
pub fn numbered_if_first(
    which: Reconstructor,
    reduced: Bound<'_, PyAny>,
) -> PyResult<Bound<'_, PyAny>> {
    if !first_call_in_dump(which) {
        return Ok(reduced);
    }
    let py = reduced.py();
    let args = reduced.get_item(1)?.cast_into::<PyTuple>()?;
    let (callable, args) = numbered(py, which, args.iter())?;
    reduce(callable, args)
}

/// The reduce value of [`call`]: the object is `which(*fields)` on load.
pub fn reduce_to<'py, F>(
    py: Python<'py>,
    which: Reconstructor,
    fields: F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: IntoIterator<Item = Bound<'py, PyAny>>,
    F::IntoIter: ExactSizeIterator,
{
    let (callable, args) = call(py, which, fields)?;
    reduce(callable, args)
}

const _: () = assert!(
    Reconstructor::ALL.len() <= 32,
    "one bit each in dump::first_time"
);

/// Whether `which` has not been called yet in the dump in progress, marking
/// it called. Outside a dump (a reduction asked for by hand, a digest),
/// every call is a later one.
fn first_call_in_dump(which: Reconstructor) -> bool {
    dump::first_time(1u32 << (which as u32))
}

/// What our reductions call a reconstructor through after its first call
/// in a dump, and name a state setter by. The C pickler reads `__name__` of
/// every callable it writes a REDUCE for, and a builtin function makes a
/// new str each time it is asked; this has none. It pickles as
/// `rebuild_v2(name)`, and called, it calls the reconstructor.
#[pyclass(frozen, module = "cloudpickle_rs._native")]
pub struct StandIn {
    which: Reconstructor,
}

#[pymethods]
impl StandIn {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        function(args.py(), self.which)?.call(args, kwargs)
    }

    fn __repr__(&self) -> String {
        format!(
            "<stand-in for cloudpickle_rs._native.{}>",
            self.which.name()
        )
    }

    /// `rebuild_v2(name)`, for any pickler.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        reduce_reconstructor(function(py, self.which)?)
    }
}

/// `_native._reconstructor_of(callable)`: the reconstructor a reduction's
/// callable stands for ([`StandIn`]), else the callable itself.
#[pyfunction]
#[pyo3(name = "_reconstructor_of")]
pub fn reconstructor_of<'py>(callable: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    match callable.cast_exact::<StandIn>() {
        Ok(stand_in) => function(callable.py(), stand_in.get().which).cloned(),
        Err(_) => Ok(callable.clone()),
    }
}

/// `cloudpickle_rs.rebuild_v2`, the one global our pickles name:
/// `rebuild_v2(number, *args)` calls reconstructor `number`
/// (`_native.RECONSTRUCTORS[number]`) with `args`; `rebuild_v2(name)` is the
/// reconstructor itself. It has no `__name__`, which the C pickler reads of
/// every callable it writes a REDUCE for (a builtin function makes a new str
/// each time it is asked).
#[pyclass(frozen, module = "cloudpickle_rs")]
pub struct Rebuild;

#[pymethods]
#[allow(clippy::unused_self)] // one instance, no state: Python's methods take self
impl Rebuild {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = args.py();
        if kwargs.is_some_and(|k| !k.is_empty()) {
            return Err(statics::UnpicklingError::new_err(format!(
                "{} takes no keyword arguments",
                format::GLOBAL_NAME
            )));
        }
        let first = args.get_item(0).map_err(|_| {
            statics::UnpicklingError::new_err(format!(
                "{} needs a reconstructor's number or name",
                format::GLOBAL_NAME
            ))
        })?;
        if let Ok(number) = first.cast_exact::<PyInt>() {
            let which = number
                .extract::<usize>()
                .ok()
                .and_then(|n| Reconstructor::ALL.get(n))
                .ok_or_else(|| {
                    statics::UnpicklingError::new_err(format!(
                        "cloudpickle_rs has no reconstructor number {number}"
                    ))
                })?;
            return ffi::call_tail(function(py, *which)?, args, 1);
        }
        match first.cast_exact::<PyString>() {
            Ok(name) if args.len() == 1 => by_name(name).cloned(),
            _ => Err(statics::UnpicklingError::new_err(format!(
                "{} takes a reconstructor's number and its arguments, or its name alone; got {}",
                format::GLOBAL_NAME,
                first.get_type().name()?
            ))),
        }
    }

    fn __repr__(&self) -> String {
        format!("<cloudpickle_rs.{}>", format::GLOBAL_NAME)
    }

    /// Pickled by reference, as the global it is.
    fn __reduce__(&self) -> &'static str {
        format::GLOBAL_NAME
    }
}

/// The reconstructor `which`, as the module exposes it.
fn function(py: Python<'_>, which: Reconstructor) -> PyResult<&Bound<'_, PyAny>> {
    Ok(table(py)?.callables[which as usize].bind(py))
}

/// The reconstructor named `name`.
fn by_name<'py>(name: &Bound<'py, PyString>) -> PyResult<&'py Bound<'py, PyAny>> {
    let wanted = name.to_str()?;
    match Reconstructor::ALL.iter().find(|r| r.name() == wanted) {
        Some(found) => function(name.py(), *found),
        None => Err(statics::UnpicklingError::new_err(format!(
            "cloudpickle_rs has no reconstructor named {wanted:?}"
        ))),
    }
}

/// `reconstructor(name, format)`: the reconstructor of that name, for a
/// pickle written in `format`. Format 1 named this global (refused now, by
/// name); a pickle written by hand may leave the format out.
#[pyfunction]
#[pyo3(signature = (name, format = None))]
pub fn reconstructor<'py>(
    name: &Bound<'py, PyString>,
    format: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(found) = format {
        crate::format::check_version_object(found)?;
    }
    by_name(name).cloned()
}

/// The hook's row for builtin functions, [`StandIn`]s and [`Rebuild`]:
/// [`Rebuild`] goes as its global, a reconstructor of ours (or its stand-in)
/// as `rebuild_v2(name)`, any other builtin function is left to the C
/// pickler (a global).
pub fn reduce_reconstructor<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let table = table(py)?;
    if obj.is(table.rebuild.bind(py)) {
        return Ok(table.global_name.bind(py).clone().into_any());
    }
    let function = reconstructor_of(obj)?;
    match table.names_by_address.get(&(function.as_ptr() as usize)) {
        Some(name) => reduce(
            table.rebuild.bind(py).clone(),
            PyTuple::new(py, [name.bind(py)])?,
        ),
        None => Ok(not_implemented(py)),
    }
}
