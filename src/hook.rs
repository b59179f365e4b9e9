//! `Pickler.reducer_override(obj)`: called by the C pickler for every object
//! it does not write by itself (not for int, str, list, dict, ...). Which
//! kind's reducer an object goes to is decided from its type: by exact type
//! in [`BY_EXACT_TYPE`], one row per kind, then by the few tests of
//! [`reducer_for`]. A reducer returns a reduce value, or `NotImplemented`
//! to let the C pickler go on as it would without the hook.

use std::sync::atomic::{AtomicUsize, Ordering};

use ahash::AHashMap;
use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple, PyType};

use crate::ffi::{self, MemberOffset};
use crate::kinds::{class, code, exception, function, misc, module, stdlib, typevar};
use crate::reconstructors;
use crate::support::reduce::not_implemented;
use crate::support::{lookup, registry, statics};

/// A kind's reducer: `(pickler, obj) -> reduce value or NotImplemented`.
pub type Reducer =
    for<'py> fn(&Bound<'py, PyAny>, &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>;

/// Where the classes of a kind decided by exact type are found.
enum Classes {
    /// `module.name` for each pair (a class missing from this version is skipped).
    Attrs(&'static [(&'static str, &'static str)]),
    /// The key, value and item views of dict and of OrderedDict.
    DictViews,
    /// Builtin functions (our reconstructors among them), the global our
    /// reductions call them through and their stand-ins.
    Reconstructors,
}

/// The kinds decided by exact type, one row per kind.
const BY_EXACT_TYPE: &[(Classes, Reducer)] = &[
    (Classes::Attrs(&[("types", "CodeType")]), |_, obj| {
        code::reduce_code(obj)
    }),
    (Classes::Attrs(&[("types", "CellType")]), |_, obj| {
        misc::reduce_cell(obj)
    }),
    (Classes::Attrs(&[("types", "MethodType")]), |_, obj| {
        misc::reduce_method(obj)
    }),
    (
        Classes::Attrs(&[
            ("builtins", "classmethod"),
            ("builtins", "staticmethod"),
            ("abc", "abstractclassmethod"),
            ("abc", "abstractstaticmethod"),
        ]),
        |_, obj| misc::reduce_function_wrapper(obj),
    ),
    (
        Classes::Attrs(&[("builtins", "property"), ("abc", "abstractproperty")]),
        |_, obj| misc::reduce_property(obj),
    ),
    (
        Classes::Attrs(&[
            ("typing", "TypeVar"),
            ("typing", "ParamSpec"),
            ("typing", "TypeVarTuple"),
            // 3.12+: the compiler makes PEP 695 type parameters, `typing` or not.
            ("_typing", "TypeVar"),
            ("_typing", "ParamSpec"),
            ("_typing", "TypeVarTuple"),
        ]),
        |_, obj| typevar::reduce_type_parameter(obj),
    ),
    (
        Classes::Attrs(&[("types", "GetSetDescriptorType")]),
        |_, obj| misc::reduce_getset_descriptor(obj),
    ),
    (
        Classes::Attrs(&[("types", "MappingProxyType")]),
        |_, obj| misc::reduce_mappingproxy(obj),
    ),
    (Classes::Attrs(&[("builtins", "memoryview")]), |_, obj| {
        misc::reduce_memoryview(obj)
    }),
    (Classes::Attrs(&[("_weakrefset", "WeakSet")]), |_, obj| {
        misc::reduce_weakset(obj)
    }),
    (Classes::Attrs(&[("logging", "Logger")]), |_, obj| {
        misc::reduce_logger(obj, false)
    }),
    (Classes::Attrs(&[("logging", "RootLogger")]), |_, obj| {
        misc::reduce_logger(obj, true)
    }),
    (Classes::DictViews, |_, obj| misc::reduce_dict_view(obj)),
    (
        Classes::Attrs(&[("dataclasses", "_FIELD_BASE")]),
        |_, obj| misc::reduce_dataclass_field_type(obj),
    ),
    (
        Classes::Attrs(&[
            ("dataclasses", "_MISSING_TYPE"),
            ("dataclasses", "_KW_ONLY_TYPE"),
        ]),
        |_, obj| misc::reduce_dataclass_singleton(obj),
    ),
    (Classes::Attrs(&[("io", "TextIOWrapper")]), |_, obj| {
        misc::reduce_text_file(obj)
    }),
    (
        Classes::Attrs(&[("functools", "_lru_cache_wrapper")]),
        |_, obj| stdlib::reduce_lru_cache(obj),
    ),
    (
        Classes::Attrs(&[("functools", "cached_property")]),
        |_, obj| stdlib::reduce_cached_property(obj),
    ),
    (
        Classes::Attrs(&[("functools", "singledispatchmethod")]),
        |_, obj| stdlib::reduce_singledispatchmethod(obj),
    ),
    (Classes::Attrs(&[("typing", "NewType")]), |_, obj| {
        stdlib::reduce_new_type(obj)
    }),
    (
        Classes::Attrs(&[("_contextvars", "ContextVar")]),
        |_, obj| stdlib::reduce_context_var(obj),
    ),
    (
        Classes::Attrs(&[
            ("weakref", "WeakValueDictionary"),
            ("weakref", "WeakKeyDictionary"),
        ]),
        |_, obj| stdlib::reduce_weak_dictionary(obj),
    ),
    (Classes::Attrs(&[("types", "TracebackType")]), |_, obj| {
        exception::reduce_traceback(obj)
    }),
    (Classes::Reconstructors, |_, obj| {
        reconstructors::reduce_reconstructor(obj)
    }),
];

/// The classes of [`BY_EXACT_TYPE`] found so far, by address. A class of a
/// module not yet imported is looked for once `sys.modules` has changed: an
/// object of a class cannot exist before the module that defines it is
/// imported, so importing this module imports none of them (`logging`,
/// `typing`, `dataclasses`...). The exception, [`BUILT_IN_EARLY`], is
/// imported at once.
#[derive(Default)]
struct Table {
    by_exact_type: AHashMap<usize, Reducer>,
    /// The classes `by_exact_type` points into, kept alive.
    classes: Vec<Py<PyAny>>,
    /// `(module, name, reducer)` of the classes whose module was not imported yet.
    pending: Vec<(&'static str, &'static str, Reducer)>,
    /// `len(sys.modules)` when `pending` was last looked for.
    modules_seen: usize,
}

impl Table {
    fn add(&mut self, cls: Bound<'_, PyAny>, reducer: Reducer) {
        self.by_exact_type.insert(cls.as_ptr() as usize, reducer);
        self.classes.push(cls.unbind());
    }
}

struct Hook {
    table: Mutex<Table>,
    /// Where a pickler instance keeps the C pickler's `dispatch_table`.
    dispatch_table: MemberOffset,
    /// `Pickler.dispatch_table`'s own entries (usually none), consulted here
    /// rather than through the C pickler's slot (see `pickler`).
    user_table: Py<PyDict>,
    /// The last type whose instances the hook left to the C pickler (its
    /// `ffi::type_signature`), and the registry's generation then: the next
    /// instance of it costs a few comparisons.
    plain_type: [AtomicUsize; 4],
    /// `Pickler.__dict__["reducer_override"]`: this module's hook.
    descriptor: Py<PyAny>,
}

static HOOK: PyOnceLock<Hook> = PyOnceLock::new();

/// Built-in modules that expose classes whose objects exist before anyone
/// imports them (3.12+: the compiler makes PEP 695 type parameters); cheap
/// to import, they run no Python code.
#[cfg(Py_3_12)]
const BUILT_IN_EARLY: &[&str] = &["_typing"];
#[cfg(not(Py_3_12))]
const BUILT_IN_EARLY: &[&str] = &[];

/// Builds the type table; `pickler` calls it when it makes the Pickler class.
pub fn init(
    py: Python<'_>,
    dispatch_table: MemberOffset,
    user_table: Py<PyDict>,
    descriptor: Py<PyAny>,
) -> PyResult<()> {
    let mut table = Table::default();
    for (source, reducer) in BY_EXACT_TYPE {
        match source {
            Classes::Attrs(names) => {
                for (module, name) in *names {
                    table.pending.push((module, name, *reducer));
                }
            }
            Classes::DictViews => {
                for (_, cls) in misc::dict_view_classes(py)? {
                    table.add(cls.bind(py).clone(), *reducer);
                }
            }
            Classes::Reconstructors => {
                let cls = py.import("builtins")?.getattr("len")?.get_type().into_any();
                table.add(cls, *reducer);
                for cls in [
                    py.get_type::<reconstructors::Rebuild>(),
                    py.get_type::<reconstructors::StandIn>(),
                ] {
                    table.add(cls.into_any(), *reducer);
                }
            }
        }
    }
    for module in BUILT_IN_EARLY {
        py.import(*module)?;
    }
    resolve_pending(py, &mut table)?;
    let hook = Hook {
        table: Mutex::new(table),
        dispatch_table,
        user_table,
        plain_type: Default::default(),
        descriptor,
    };
    // A second import of the module keeps the first table.
    let _ = HOOK.set(py, hook);
    Ok(())
}

/// Moves the classes of the modules now imported from `pending` to the table.
fn resolve_pending(py: Python<'_>, table: &mut Table) -> PyResult<()> {
    let modules = lookup::sys_modules(py)?;
    table.modules_seen = modules.len();
    let mut still_pending = Vec::new();
    for (module_name, name, reducer) in std::mem::take(&mut table.pending) {
        match modules.get_item(module_name)? {
            Some(module) => {
                if let Some(cls) = lookup::getattr_opt(&module, &PyString::new(py, name))? {
                    table.add(cls, reducer);
                }
            }
            None => still_pending.push((module_name, name, reducer)),
        }
    }
    table.pending = still_pending;
    Ok(())
}

/// The reducer of `tp`'s exact type, looking for classes of newly imported
/// modules first. (Module attributes are read with the lock released: a
/// module's `__getattr__` may run anything, a nested dump included.)
fn exact_type_reducer(
    py: Python<'_>,
    hook: &Hook,
    tp: &Bound<'_, PyType>,
) -> PyResult<Option<Reducer>> {
    let modules_now = lookup::sys_modules(py)?.len();
    let stale = {
        let table = hook.table.lock();
        if table.pending.is_empty() || table.modules_seen == modules_now {
            return Ok(table.by_exact_type.get(&(tp.as_ptr() as usize)).copied());
        }
        Table {
            pending: table.pending.clone(),
            ..Table::default()
        }
    };
    let mut found = stale;
    resolve_pending(py, &mut found)?;
    let mut table = hook.table.lock();
    for (address, reducer) in found.by_exact_type {
        table.by_exact_type.insert(address, reducer);
    }
    table.classes.extend(found.classes);
    table.pending = found.pending;
    table.modules_seen = found.modules_seen;
    Ok(table.by_exact_type.get(&(tp.as_ptr() as usize)).copied())
}

fn hook(py: Python<'_>) -> PyResult<&Hook> {
    HOOK.get(py).ok_or_else(|| {
        pyo3::exceptions::PySystemError::new_err("cloudpickle_rs's Pickler is not initialised")
    })
}

/// The reducer for `obj`, or None for an object the hook leaves to the C
/// pickler unless it is an instance of a class pickled by value.
#[inline]
fn reducer_for(obj: &Bound<'_, PyAny>, hook: &Hook) -> PyResult<Option<Reducer>> {
    let py = obj.py();
    if ffi::as_function(obj).is_some() {
        return Ok(Some(function::reduce_function));
    }
    if obj.is_instance_of::<PyType>() {
        return Ok(Some(|_, obj| class::reduce_class(obj)));
    }
    let tp = obj.get_type();
    if let Some(reducer) = exact_type_reducer(py, hook, &tp)? {
        return Ok(Some(reducer));
    }
    if obj.is_instance_of::<pyo3::types::PyModule>() {
        return Ok(Some(|_, obj| module::reduce_module(obj)));
    }
    if obj.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        return Ok(Some(|_, obj| exception::reduce_exception(obj)));
    }
    // Such as the sys.stdout of pytest's output capture (io.TextIOWrapper
    // itself is in the table).
    if ffi::is_heap_type(&tp) && tp.is_subclass(statics::text_io_wrapper(py)?)? {
        return Ok(Some(|_, obj| misc::reduce_standard_stream(obj)));
    }
    // Only an enum's class has a metaclass of its own (EnumType): one
    // pointer comparison for every other object.
    if !tp.get_type().is(py.get_type::<PyType>()) && tp.is_subclass(statics::enum_class(py)?)? {
        return Ok(Some(|_, obj| class::reduce_enum_member(obj)));
    }
    Ok(None)
}

/// Exactly a tuple, list, dict, set or frozenset: the containers the hook
/// is called for most.
#[inline]
fn is_plain_container(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_exact_instance_of::<PyTuple>()
        || obj.is_exact_instance_of::<PyDict>()
        || obj.is_exact_instance_of::<PyList>()
        || obj.is_exact_instance_of::<PySet>()
        || obj.is_exact_instance_of::<PyFrozenSet>()
}

/// `Pickler.reducer_override(obj)`.
pub fn reducer_override<'py>(
    pickler: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if is_plain_container(obj) {
        // The C pickler writes these itself and never consults a dispatch
        // table for them; upstream's hook leaves them alone too.
        return Ok(not_implemented(py));
    }
    let hook = hook(py)?;
    let tp = obj.get_type();
    let signature = ffi::type_signature(&tp);
    let known_plain = signature.is_some_and(|sig| hook.is_plain(sig));
    let reducer = if known_plain {
        None
    } else {
        reducer_for(obj, hook)?
    };
    if let Some(table) = hook.dispatch_table.read(pickler) {
        // The C pickler consults this table itself for what we return NotImplemented for.
        if reducer.is_none() {
            return Ok(not_implemented(py));
        }
        if let Some(reduce) = lookup::mapping_get(&table, obj.get_type().as_any())? {
            return reduce.call1((obj,));
        }
    } else {
        let user_table = hook.user_table.bind(py);
        if !user_table.is_empty() {
            if let Some(reduce) = user_table.get_item(obj.get_type())? {
                return reduce.call1((obj,));
            }
        }
    }
    if let Some(reduce) = reducer {
        return reduce(pickler, obj);
    }
    if known_plain || !class::surely_by_value(&tp)? {
        if let Some(signature) = signature {
            hook.remember_plain(signature);
        }
        return Ok(not_implemented(py));
    }
    let protocol = || protocol_of(pickler);
    let direct = || calls_us_directly(pickler, hook);
    let reduced = class::reduce_instance_of_dynamic_class(obj, protocol, direct)?;
    Ok(reduced.unwrap_or_else(|| not_implemented(py)))
}

/// Whether the C pickler calls this hook itself: neither the pickler's
/// class nor the pickler overrides `reducer_override`.
fn calls_us_directly(pickler: &Bound<'_, PyAny>, hook: &Hook) -> bool {
    let py = pickler.py();
    let name = intern!(py, "reducer_override");
    let ours = |found: Bound<'_, PyAny>| found.is(hook.descriptor.bind(py));
    pickler.get_type().getattr(name).is_ok_and(ours)
        && ffi::instance_dict(pickler).is_ok_and(|d| d.contains(name).is_ok_and(|has| !has))
}

impl Hook {
    /// Whether `signature` is the type last found plain, with the registry
    /// unchanged since.
    #[inline]
    fn is_plain(&self, signature: [usize; 3]) -> bool {
        let [a, b, c, generation] = &self.plain_type;
        a.load(Ordering::Relaxed) == signature[0]
            && b.load(Ordering::Relaxed) == signature[1]
            && c.load(Ordering::Relaxed) == signature[2]
            && generation.load(Ordering::Relaxed) == registry::generation()
    }

    fn remember_plain(&self, signature: [usize; 3]) {
        let [a, b, c, generation] = &self.plain_type;
        a.store(signature[0], Ordering::Relaxed);
        b.store(signature[1], Ordering::Relaxed);
        c.store(signature[2], Ordering::Relaxed);
        generation.store(registry::generation(), Ordering::Relaxed);
    }
}

/// Where `__init__` keeps the protocol (the C pickler's own field is not
/// readable), in the pickler's `__dict__`.
pub const PROTOCOL_ATTRIBUTE: &str = "_cloudpickle_rs_protocol";

/// The protocol a pickler writes, when our `__init__` recorded it.
fn protocol_of(pickler: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    let py = pickler.py();
    let dict = ffi::instance_dict(pickler)?;
    match dict.get_item(intern!(py, PROTOCOL_ATTRIBUTE))? {
        Some(protocol) if protocol.is_exact_instance_of::<pyo3::types::PyInt>() => {
            Ok(Some(protocol.extract()?))
        }
        _ => Ok(None),
    }
}
