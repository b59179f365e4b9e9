//! Exceptions and tracebacks. An exception keeps what
//! `BaseException.__reduce__` leaves out (`__cause__`, `__context__`,
//! `__suppress_context__`, `__traceback__`); a traceback travels as the
//! (file, function, line) of each frame and loads as frames of a compiled
//! `raise`, so that `traceback.format_exception` shows the sender's frames.
//!
//! Wire layout: `make_exception(cls, args)` then BUILD of its `__dict__`
//! and links; `make_traceback(((filename, name, lineno), ...))`.

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyModule, PyString, PyTuple, PyType};

use crate::ffi;
use crate::name;
use crate::reconstructors::{self, Reconstructor};
use crate::support::reduce::not_implemented;
use crate::support::{lookup, names, statics};

/// Adds the reconstructors of exceptions and tracebacks to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(
        m,
        Reconstructor::MakeException,
        wrap_pyfunction!(make_exception, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::MakeTraceback,
        wrap_pyfunction!(make_traceback, m)?,
    )
}

// ---------------------------------------------------------------------------
// Pickling.

/// An exception: a user-defined one whose class keeps
/// `BaseException.__reduce__` is rebuilt from its class and `args` without
/// calling `__init__` (which may need more arguments than `args` holds),
/// then its `__dict__`; others as their class reduces them. Either way the
/// state also brings back what `BaseException.__reduce__` leaves out (see
/// [`exception_links`]), when the class keeps `BaseException.__setstate__`.
pub fn reduce_exception<'py>(exc: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = exc.py();
    Ok(reduce_exception_or_none(exc)?.unwrap_or_else(|| not_implemented(py)))
}

fn reduce_exception_or_none<'py>(exc: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = exc.py();
    let base_reduce = statics::base_exception_reduce(py)?;
    let cls = exc.get_type();
    // copyreg.pickle() registrations (tblib's, for one) come first, as in the C pickler.
    if statics::copyreg_dispatch_table(py)?.contains(&cls)? {
        return Ok(None);
    }
    let own = if ffi::is_heap_type(&cls) && cls.getattr(intern!(py, "__reduce__"))?.is(base_reduce)
    {
        let state = lookup::getattr_opt(exc, intern!(py, "__dict__"))?
            .unwrap_or_else(|| py.None().into_bound(py));
        let (make, args) = reconstructors::call(
            py,
            Reconstructor::MakeException,
            [cls.clone().into_any(), exc.getattr(intern!(py, "args"))?],
        )?;
        Some(PyTuple::new(py, [make, args.into_any(), state])?)
    } else {
        None
    };
    let Some(links) = exception_links(exc)? else {
        return Ok(own.map(Bound::into_any));
    };
    let base_setstate = py
        .get_type::<pyo3::exceptions::PyBaseException>()
        .getattr(intern!(py, "__setstate__"))?;
    if !cls.getattr(intern!(py, "__setstate__"))?.is(&base_setstate) {
        return Ok(own.map(Bound::into_any));
    }
    let reduced = match own {
        Some(own) => own,
        None => match exc
            .call_method1(intern!(py, "__reduce_ex__"), (4,))?
            .cast_into::<PyTuple>()
        {
            Ok(reduced) => reduced,
            Err(_) => return Ok(None),
        },
    };
    Ok(Some(with_links(reduced, links)?.into_any()))
}

/// What `BaseException.__reduce__` leaves out, as state for
/// `BaseException.__setstate__` (which sets each): `__cause__`,
/// `__context__`, `__suppress_context__` and `__traceback__` (see
/// [`reduce_traceback`]), those that are not their default. None when all
/// are.
fn exception_links<'py>(exc: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = exc.py();
    let links = PyDict::new(py);
    for name in [
        name!(py, "__cause__")?,
        name!(py, "__context__")?,
        name!(py, "__traceback__")?,
    ] {
        let value = exc.getattr(name.cast::<PyString>()?)?;
        if !value.is_none() {
            links.set_item(name, value)?;
        }
    }
    let suppress = exc.getattr(intern!(py, "__suppress_context__"))?;
    if suppress.is_truthy()? {
        links.set_item(name!(py, "__suppress_context__")?, suppress)?;
    }
    Ok((!links.is_empty()).then_some(links))
}

/// `reduced` with `links` added to its state when that state is a dict (or
/// none) that the pickle's BUILD sets; else `reduced` as it is.
fn with_links<'py>(
    reduced: Bound<'py, PyTuple>,
    links: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = reduced.py();
    let mut parts: Vec<Bound<'py, PyAny>> = reduced.iter().collect();
    if !(2..=6).contains(&parts.len()) || parts.get(5).is_some_and(|setter| !setter.is_none()) {
        return Ok(reduced);
    }
    while parts.len() < 3 {
        parts.push(py.None().into_bound(py));
    }
    let state = if parts[2].is_none() {
        links
    } else if let Ok(dict) = parts[2].cast::<PyDict>() {
        let merged = dict.copy()?;
        merged.update(links.as_mapping())?;
        merged
    } else {
        return Ok(reduced);
    };
    parts[2] = state.into_any();
    PyTuple::new(py, parts)
}

/// `(make_traceback, (((filename, name, lineno), ...),))`: the frames from
/// the outermost, each as `traceback` shows it. Their locals and globals do
/// not travel; the receiver's `traceback.format_exception` shows the
/// sender's files, lines and functions (and the source lines where it has
/// the files).
pub fn reduce_traceback<'py>(tb: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = tb.py();
    let mut frames = Vec::new();
    let mut current = tb.clone();
    while !current.is_none() {
        let code = current
            .getattr(intern!(py, "tb_frame"))?
            .getattr(intern!(py, "f_code"))?;
        let lineno = current.getattr(intern!(py, "tb_lineno"))?;
        let lineno = if lineno.is_none() {
            PyInt::new(py, 0).into_any()
        } else {
            lineno
        };
        let frame = [
            names::canonical(code.getattr(intern!(py, "co_filename"))?)?,
            names::canonical(code.getattr(intern!(py, "co_name"))?)?,
            lineno,
        ];
        frames.push(PyTuple::new(py, frame)?);
        current = current.getattr(intern!(py, "tb_next"))?;
    }
    reconstructors::reduce_to(
        py,
        Reconstructor::MakeTraceback,
        [PyTuple::new(py, frames)?.into_any()],
    )
}

// ---------------------------------------------------------------------------
// Loading.

/// An exception of class `cls` with these `args`, without running `__init__`.
#[pyfunction]
pub fn make_exception<'py>(
    cls: &Bound<'py, PyType>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    if !cls.is_subclass(&py.get_type::<pyo3::exceptions::PyBaseException>())? {
        return Err(PyTypeError::new_err(format!(
            "{} is not an exception class",
            cls.name()?
        )));
    }
    let new = py
        .get_type::<pyo3::exceptions::PyBaseException>()
        .getattr(intern!(py, "__new__"))?;
    let mut call_args = vec![cls.clone().into_any()];
    call_args.extend(args.iter());
    let exc = new.call1(PyTuple::new(py, call_args)?)?;
    exc.setattr(intern!(py, "args"), args)?;
    Ok(exc)
}

/// `make_traceback(((filename, name, lineno), ...))`: a traceback whose
/// frames (from the outermost) run no code of the sender: each is the frame
/// of a `raise` compiled under that file name, function name and line.
#[pyfunction]
pub fn make_traceback<'py>(frames: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    let py = frames.py();
    let bad = || PyTypeError::new_err("a traceback frame must be (filename, name, lineno >= 0)");
    let traceback_type = py.import("types")?.getattr("TracebackType")?;
    let raising = raising_code(py)?;
    let mut tb = py.None().into_bound(py);
    for frame in frames.iter().collect::<Vec<_>>().into_iter().rev() {
        let frame = frame.cast_into::<PyTuple>().map_err(|_| bad())?;
        if frame.len() != 3 {
            return Err(bad());
        }
        // Exact types: reading a subclass (an `__index__`) could run code.
        let filename = frame
            .get_item(0)?
            .cast_into_exact::<PyString>()
            .map_err(|_| bad())?;
        let name = frame
            .get_item(1)?
            .cast_into_exact::<PyString>()
            .map_err(|_| bad())?;
        let lineno: i32 = frame
            .get_item(2)?
            .cast_into_exact::<PyInt>()
            .map_err(|_| bad())?
            .extract()?;
        if lineno < 0 {
            return Err(bad());
        }
        let code = raising_frame_code(&raising, &filename, &name, lineno)?;
        let frame = raised_frame(py, &code)?;
        // tb_lasti -1: no instruction, so no column markers under the line.
        tb = traceback_type.call1((tb, frame, -1, lineno))?;
    }
    Ok(tb)
}

/// `raise __cprs_raised__`, compiled once.
fn raising_code(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static CODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CODE.get_or_try_init(py, || {
        py.import("builtins")?
            .getattr("compile")?
            .call1(("raise __cprs_raised__", "<traceback>", "exec"))
            .map(Bound::unbind)
    })
    .map(|code| code.bind(py).clone())
}

fn raising_frame_code<'py>(
    raising: &Bound<'py, PyAny>,
    filename: &Bound<'py, PyString>,
    name: &Bound<'py, PyString>,
    lineno: i32,
) -> PyResult<Bound<'py, PyAny>> {
    let py = raising.py();
    let changes = PyDict::new(py);
    changes.set_item("co_filename", filename)?;
    changes.set_item("co_name", name)?;
    if cfg!(Py_3_11) {
        changes.set_item("co_qualname", name)?;
    }
    changes.set_item("co_firstlineno", lineno.max(1))?;
    raising.call_method("replace", (), Some(&changes))
}

/// The frame in which `code` raised, from the exception's traceback.
fn raised_frame<'py>(py: Python<'py>, code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let marker = PyRuntimeError::new_err("cloudpickle_rs traceback frame");
    let globals = PyDict::new(py);
    globals.set_item("__cprs_raised__", marker.value(py))?;
    globals.set_item("__name__", "__cprs_traceback__")?;
    let Err(raised) = py
        .import("builtins")?
        .getattr("exec")?
        .call1((code, &globals))
    else {
        return Err(PyRuntimeError::new_err("the traceback frame did not raise"));
    };
    let mut tb = raised
        .traceback(py)
        .ok_or_else(|| PyRuntimeError::new_err("the traceback frame left no traceback"))?
        .into_any();
    loop {
        let next = tb.getattr(intern!(py, "tb_next"))?;
        if next.is_none() {
            return tb.getattr(intern!(py, "tb_frame"));
        }
        tb = next;
    }
}
