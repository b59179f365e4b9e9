//! Python objects the native code needs, imported once and lazily.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Defines `fn $name(py) -> PyResult<&Bound<PyAny>>` returning `module.attr`, imported once.
macro_rules! cached_attr {
    ($(#[$doc:meta])* $name:ident, $module:literal, $attr:literal) => {
        $(#[$doc])*
        pub fn $name(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
            static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            CELL.import(py, $module, $attr)
        }
    };
}

cached_attr!(method_type, "types", "MethodType");
cached_attr!(module_type, "types", "ModuleType");
cached_attr!(code_type, "types", "CodeType");
cached_attr!(function_type, "types", "FunctionType");
cached_attr!(builtins_dict, "builtins", "__dict__");
cached_attr!(bytes_io, "io", "BytesIO");
cached_attr!(text_io_wrapper, "io", "TextIOWrapper");
cached_attr!(
    /// The C pickler everything here builds on (`pickle.Pickler is _pickle.Pickler`).
    c_pickler, "_pickle", "Pickler"
);
cached_attr!(copyreg_dispatch_table, "copyreg", "dispatch_table");
cached_attr!(chain_map, "collections", "ChainMap");
cached_attr!(opmap, "opcode", "opmap");
cached_attr!(enum_class, "enum", "Enum");
cached_attr!(abc_meta, "abc", "ABCMeta");
cached_attr!(property_type, "builtins", "property");
cached_attr!(member_descriptor_type, "types", "MemberDescriptorType");

#[cfg(Py_3_15)]
cached_attr!(
    /// What a lazily imported name (PEP 810) holds until first use.
    lazy_import_type, "types", "LazyImportType"
);

pyo3::import_exception!(pickle, PicklingError);
pyo3::import_exception!(pickle, UnpicklingError);
cached_attr!(weak_set, "weakref", "WeakSet");
cached_attr!(get_logger, "logging", "getLogger");
cached_attr!(builtin_getattr, "builtins", "getattr");
cached_attr!(ordered_dict, "collections", "OrderedDict");
cached_attr!(
    /// Explains a failed dump: where the unpicklable object was reached.
    annotate_failure, "cloudpickle_rs._diagnose", "annotate"
);
cached_attr!(
    /// The Pickler whose output loads with upstream cloudpickle 3.x alone.
    compat_pickler, "cloudpickle_rs._compat_writer", "CompatPickler"
);
cached_attr!(
    /// Upstream's sentinel for "no value" in `_make_cell`.
    empty_cell_value, "cloudpickle_rs.cloudpickle", "_empty_cell_value"
);

/// `BaseException.__reduce__`: classes that keep it are rebuilt without `__init__`.
pub fn base_exception_reduce(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        py.get_type::<pyo3::exceptions::PyBaseException>()
            .getattr("__reduce__")
            .map(Bound::unbind)
    })
    .map(|reduce| reduce.bind(py))
}
