//! The load-side callables our pickles name, declared once.
//!
//! A pickle names one global of ours, `reconstructor`, and reaches the others
//! through it (`reconstructor("make_function")`): each global a pickle names
//! costs the pickler an import, the others only a call. Each kind registers
//! its reconstructors into this table when the module is imported
//! ([`add`]); reducers name them with [`get`]. The table depends on no kind.

use ahash::AHashMap;
use pyo3::exceptions::PySystemError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString, PyTuple};

use crate::support::names;
use crate::support::reduce::{not_implemented, reduce};
use crate::support::statics;

/// Declares the reconstructors: one variant and one name each.
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
    /// [`reconstructor`] itself.
    reconstructor: Py<PyAny>,
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
/// reconstructors, and adds [`reconstructor`] and `RECONSTRUCTORS` (their
/// names) to the module.
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
    let table = Table {
        callables,
        stand_ins,
        names_by_address,
        reconstructor: m.getattr("reconstructor")?.unbind(),
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

/// The reconstructor `which`, as the module exposes it.
fn function(py: Python<'_>, which: Reconstructor) -> PyResult<&Bound<'_, PyAny>> {
    Ok(table(py)?.callables[which as usize].bind(py))
}

/// The reconstructor `which` as a reduction names it: its [`StandIn`].
pub fn get(py: Python<'_>, which: Reconstructor) -> PyResult<&Bound<'_, PyAny>> {
    Ok(table(py)?.stand_ins[which as usize].bind(py))
}

/// What our reductions call instead of the reconstructor itself. The C
/// pickler reads `__name__` of every callable it writes a REDUCE for, and a
/// builtin function makes a new str each time it is asked; this has none.
/// It pickles as the reconstructor does, `reconstructor(name, format)`, and
/// called, it calls the reconstructor.
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

    /// `reconstructor(name, format)`, for any pickler.
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

/// `reconstructor(name, format)`: the reconstructor of that name, for a
/// pickle written in `format` (refused unless it is ours; a pickle written
/// by hand may leave it out).
#[pyfunction]
#[pyo3(signature = (name, format = None))]
pub fn reconstructor<'py>(
    name: &Bound<'py, PyString>,
    format: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    if let Some(found) = format {
        crate::format::check_version_object(found)?;
    }
    let wanted = name.to_str()?;
    match Reconstructor::ALL.iter().find(|r| r.name() == wanted) {
        Some(found) => Ok(function(py, *found)?.clone()),
        None => Err(statics::UnpicklingError::new_err(format!(
            "cloudpickle_rs has no reconstructor named {wanted:?}"
        ))),
    }
}

/// One of our reconstructors is written as `reconstructor(name)`: a pickle
/// then names a single global of ours, however many reconstructors it uses.
/// Any other builtin function is left to the C pickler (a global).
pub fn reduce_reconstructor<'py>(function: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = function.py();
    let table = table(py)?;
    let function = reconstructor_of(function)?;
    match table.names_by_address.get(&(function.as_ptr() as usize)) {
        Some(name) => reduce(
            table.reconstructor.bind(py).clone(),
            PyTuple::new(
                py,
                [
                    name.bind(py).clone().into_any(),
                    crate::format::VERSION.into_pyobject(py)?.into_any(),
                ],
            )?,
        ),
        None => Ok(not_implemented(py)),
    }
}

/// `(which, args)`: the object is `which(*args)` on load.
pub fn reduce_to(which: Reconstructor, args: Bound<'_, PyTuple>) -> PyResult<Bound<'_, PyAny>> {
    reduce(get(args.py(), which)?.clone(), args)
}
