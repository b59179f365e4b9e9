//! Classes: by reference when importable; otherwise by value as a skeleton
//! (metaclass, name, bases, creation namespace, tracker id) memoized first,
//! then its attributes. Enums are rebuilt with their members; their members
//! go by name. Instances of classes pickled by value get canonical state
//! names.
//!
//! Wire layout: `make_class(*class_args)` (or `make_enum(*enum_args)`),
//! memoized, then `class_setstate(cls, class_state)`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString, PyTuple, PyType};

use crate::ffi;
use crate::format;
use crate::layout;
use crate::name;
use crate::reconstructors::{self, Reconstructor};
use crate::support::reduce::{not_implemented, reduce_to_getattr, reduce_with_setter};
use crate::support::{digest, dump, lookup, names, registry, statics, tracker};

layout! {
    /// `make_class`'s arguments.
    pub mod class_args {
        METACLASS = "metaclass",
        NAME = "name",
        /// `__orig_bases__` for generic classes (PEP 560), else `__bases__`.
        BASES = "bases",
        /// What must exist when the class is made: `__module__`,
        /// `__qualname__`, `__slots__`, a `__dict__` property.
        NAMESPACE = "namespace",
        /// The receiver keeps one class per id (see `support::tracker`).
        TRACKER_ID = "tracker_id",
    }
}

layout! {
    /// `make_enum`'s arguments.
    pub mod enum_args {
        BASES = "bases",
        NAME = "name",
        QUALNAME = "qualname",
        /// `{name: value}` from `__members__` (aliases included).
        MEMBERS = "members",
        MODULE = "module",
        TRACKER_ID = "tracker_id",
    }
}

layout! {
    /// What `class_setstate` restores once the class is memoized.
    pub mod class_state {
        /// The class's own attributes, in definition order.
        ATTRIBUTES = "attributes",
        /// For an ABC, the classes registered as its virtual subclasses (or None).
        REGISTRY = "registry",
    }
}

/// Adds the reconstructors and layouts of classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(
        m,
        Reconstructor::BuiltinType,
        wrap_pyfunction!(builtin_type, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::MakeClass,
        wrap_pyfunction!(make_class, m)?,
    )?;
    reconstructors::add(m, Reconstructor::MakeEnum, wrap_pyfunction!(make_enum, m)?)?;
    reconstructors::add(
        m,
        Reconstructor::ClassSetstate,
        wrap_pyfunction!(class_setstate, m)?,
    )?;
    format::export(m, "class_args", &class_args::FIELD_NAMES)?;
    format::export(m, "enum_args", &enum_args::FIELD_NAMES)?;
    format::export(m, "class_state", &class_state::FIELD_NAMES)
}

// ---------------------------------------------------------------------------
// Pickling.

/// `{type: name}` for every class in `types` (as cloudpickle's `_BUILTIN_TYPE_NAMES`).
fn builtin_type_names(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    static NAMES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    NAMES
        .get_or_try_init(py, || {
            let names = PyDict::new(py);
            let namespace = py
                .import("types")?
                .getattr("__dict__")?
                .cast_into::<PyDict>()?;
            for (name, value) in namespace.iter() {
                if value.get_type().is(py.get_type::<PyType>()) {
                    names.set_item(value, name)?;
                }
            }
            Ok::<_, PyErr>(names.unbind())
        })
        .map(|d| d.bind(py))
}

fn is_singleton_type(cls: &Bound<'_, PyAny>) -> bool {
    let py = cls.py();
    [
        py.None().into_bound(py),
        py.Ellipsis().into_bound(py),
        py.NotImplemented().into_bound(py),
    ]
    .iter()
    .any(|singleton| singleton.get_type().is(cls))
}

pub fn reduce_class<'py>(cls: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    // The C pickler writes NoneType, type(...) and type(NotImplemented) itself.
    if is_singleton_type(cls) {
        return Ok(not_implemented(py));
    }
    if let Some(name) = builtin_type_names(py)?.get_item(cls)? {
        return reconstructors::reduce_to(py, Reconstructor::BuiltinType, [name]);
    }
    // A class made by C code cannot be rebuilt from its dict: it goes by
    // reference (as pickle writes it), even before its module is imported
    // (3.12+: the compiler makes `typing.TypeVar`s without `typing`).
    let by_reference = match cls.cast::<PyType>() {
        Ok(class) if !ffi::is_python_class(class) => true,
        _ => lookup::function_or_class_by_reference(cls)?,
    };
    if by_reference {
        return Ok(not_implemented(py));
    }
    if let Some(placeholder) = digest::placeholder(cls)? {
        return Ok(placeholder);
    }
    let cls = cls.cast::<PyType>()?;
    if cls.is_subclass(statics::enum_class(py)?)? {
        reduce_enum(cls)
    } else {
        reduce_dynamic_class(cls)
    }
}

/// `(make_class, class_args, class_state, None, None, class_setstate)`.
/// Everything but the creation namespace arrives as attributes once the
/// class is memoized, so methods may refer back to it.
fn reduce_dynamic_class<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    use class_args as arg;
    let py = cls.py();
    let own = cls.getattr(intern!(py, "__dict__"))?;
    let own_item = |name: &str| lookup::mapping_get(&own, &PyString::new(py, name));
    let namespace = PyDict::new(py);
    if let Some(module) = own_item("__module__")? {
        namespace.set_item(name!(py, "__module__")?, names::canonical(module)?)?;
    }
    namespace.set_item(
        name!(py, "__qualname__")?,
        names::canonical(cls.getattr(intern!(py, "__qualname__"))?)?,
    )?;
    if let Some(slots) = own_item("__slots__")? {
        namespace.set_item(name!(py, "__slots__")?, slots)?;
    }
    if let Some(dict_property) = own_item("__dict__")? {
        if dict_property.is_instance(statics::property_type(py)?)? {
            namespace.set_item(name!(py, "__dict__")?, dict_property)?;
        }
    }
    let mut args: [Option<Bound<'py, PyAny>>; arg::LEN] = Default::default();
    args[arg::METACLASS] = Some(cls.get_type().into_any());
    args[arg::NAME] = Some(names::canonical(cls.getattr(intern!(py, "__name__"))?)?);
    args[arg::BASES] = Some(bases_of(cls)?);
    args[arg::NAMESPACE] = Some(namespace.into_any());
    let (attributes, registry) = class_state(cls)?;
    tracked(
        cls,
        Reconstructor::MakeClass,
        args,
        arg::TRACKER_ID,
        attributes,
        registry,
    )
}

/// `(make, args, class_state, None, None, class_setstate)`, `args` given
/// but for the tracker id, which goes at `id_at`: derived from the pickle
/// of the rest (see [`digest`]).
fn tracked<'py, const N: usize>(
    cls: &Bound<'py, PyType>,
    make: Reconstructor,
    mut args: [Option<Bound<'py, PyAny>>; N],
    id_at: usize,
    attributes: Bound<'py, PyDict>,
    registry: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let mut state: [Option<Bound<'py, PyAny>>; class_state::LEN] = Default::default();
    state[class_state::ATTRIBUTES] = Some(attributes.into_any());
    state[class_state::REGISTRY] = Some(registry);
    let state = format::tuple(py, state)?.into_any();
    let definition = PyTuple::new(
        py,
        args.iter().flatten().chain([&state]).collect::<Vec<_>>(),
    )?;
    let tracker_id = tracker::tracker_id_for(cls.as_any(), || {
        digest::tracker_id(cls.as_any(), definition.as_any())
    })?;
    if digest::in_progress() {
        return digest::by_id(py, &tracker_id);
    }
    args[id_at] = Some(PyString::new(py, &tracker_id).into_any());
    let (rebuild, args) = reconstructors::call(py, make, format::tuple(py, args)?)?;
    reduce_with_setter(
        rebuild,
        args,
        state,
        reconstructors::get(py, Reconstructor::ClassSetstate)?.clone(),
    )
}

/// `__orig_bases__` for generic classes (PEP 560), else `__bases__`.
pub fn bases_of<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let own = cls.getattr(intern!(py, "__dict__"))?;
    match lookup::mapping_get(&own, intern!(py, "__orig_bases__"))? {
        Some(bases) => Ok(bases),
        None => cls.getattr(intern!(py, "__bases__")),
    }
}

/// The class's own attributes (not identical to a base's), with canonical
/// names, in definition order (`vars(cls)`); the receiver keeps that order
/// (see [`keep_written_order`]), so the class pickles to the same bytes again.
pub fn own_attributes<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyDict>> {
    let py = cls.py();
    let own = cls
        .getattr(intern!(py, "__dict__"))?
        .call_method0(intern!(py, "copy"))?
        .cast_into::<PyDict>()?;
    let bases = cls
        .getattr(intern!(py, "__bases__"))?
        .cast_into::<PyTuple>()?;
    let inherited = PyDict::new(py);
    for base in bases.iter().rev() {
        inherited.update(
            base.getattr(intern!(py, "__dict__"))?
                .call_method0("copy")?
                .cast_into::<PyDict>()?
                .as_mapping(),
        )?;
    }
    let attributes = PyDict::new(py);
    for (key, value) in own.iter() {
        if inherited
            .get_item(&key)?
            .is_some_and(|base_value| base_value.is(&value))
        {
            continue;
        }
        attributes.set_item(names::canonical(key)?, name_like_canonical(value)?)?;
    }
    Ok(attributes)
}

/// A str value that looks like a name (`doc = "doc"`, `mode = "fast"`) as
/// its canonical copy: the compiler interned it in the sender, where it is
/// one object with every equal name the pickler writes (a slot name, an
/// attribute key), not in a receiver that loaded it.
fn name_like_canonical(value: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    match value.cast_exact::<PyString>() {
        Ok(text) if names::is_name_like(text) => names::canonical(value),
        _ => Ok(value),
    }
}

/// Whether `cls` is surely pickled by value: a class of `__main__`, of a
/// module registered by value, or a local one (`<locals>` in its qualified
/// name, read from the type itself). A class of an importable module that
/// its module does not hold under its name goes by value too, but telling
/// needs a lookup in that module for every instance of every class.
pub fn surely_by_value(cls: &Bound<'_, PyType>) -> PyResult<bool> {
    let Some(module) = ffi::heap_type_module(cls)? else {
        return Ok(false);
    };
    let by_value_module = module.cast::<PyString>().is_ok_and(|m| {
        m.to_str()
            .is_ok_and(|m| m == "__main__" || registry::is_registered(m))
    });
    Ok(by_value_module
        || ffi::heap_type_qualname(cls)
            .is_some_and(|q| q.to_str().is_ok_and(|q| q.contains("<locals>"))))
}

/// An instance of a class pickled by value ([`surely_by_value`]), reduced as the C pickler would
/// (`__reduce_ex__(protocol)`) but with the names of its state (`__dict__`
/// keys, slot names) canonical: in the sender they are interned, one object
/// with equal strings of the class (a dataclass's field names); after
/// loading they are interned again, while those strings are not, so the
/// memo would share differently. None: leave it to the C pickler.
pub fn reduce_instance_of_dynamic_class<'py>(
    obj: &Bound<'py, PyAny>,
    protocol: impl FnOnce() -> PyResult<Option<i64>>,
    hook_is_direct: impl FnOnce() -> bool,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    let cls = obj.get_type();
    let Some(protocol) = protocol()?.filter(|p| *p >= 2) else {
        return Ok(None);
    };
    // copyreg.pickle() registrations come before __reduce_ex__, as in the C pickler.
    if statics::copyreg_dispatch_table(py)?.contains(&cls)? {
        return Ok(None);
    }
    let reduced = obj.call_method1(intern!(py, "__reduce_ex__"), (protocol,))?;
    let Ok(parts) = reduced.cast::<PyTuple>() else {
        return Ok(Some(reduced));
    };
    let Ok(state) = parts.get_item(2) else {
        return Ok(Some(reduced));
    };
    let Some(state) = state_with_canonical_names(&state)? else {
        return Ok(Some(reduced));
    };
    let mut items: Vec<Bound<'py, PyAny>> = parts.iter().collect();
    items[2] = state.clone();
    let reduction = PyTuple::new(py, items)?.into_any();
    if let Ok(copy) = state.cast_exact::<PyDict>() {
        dump::empty_once_written(&reduction, copy, hook_is_direct);
    }
    Ok(Some(reduction))
}

/// `state` (a dict, or `(dict or None, slots dict)`) with canonical str keys;
/// None when it is neither (a `__getstate__` of the class's own making).
fn state_with_canonical_names<'py>(
    state: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = state.py();
    let canonical_dict = |d: &Bound<'py, PyDict>| -> PyResult<Bound<'py, PyAny>> {
        let out = PyDict::new(py);
        for (key, value) in d.iter() {
            out.set_item(names::canonical(key)?, value)?;
        }
        Ok(out.into_any())
    };
    if let Ok(dict) = state.cast_exact::<PyDict>() {
        return canonical_dict(dict).map(Some);
    }
    let Ok(pair) = state.cast_exact::<PyTuple>() else {
        return Ok(None);
    };
    if pair.len() != 2 {
        return Ok(None);
    }
    let mut halves = Vec::with_capacity(2);
    for half in pair.iter() {
        if half.is_none() {
            halves.push(half);
        } else if let Ok(dict) = half.cast_exact::<PyDict>() {
            halves.push(canonical_dict(dict)?);
        } else {
            return Ok(None);
        }
    }
    Ok(Some(PyTuple::new(py, halves)?.into_any()))
}

/// What the state setter restores: the attributes, and for an ABC the
/// classes registered as its virtual subclasses.
fn class_state<'py>(cls: &Bound<'py, PyType>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let py = cls.py();
    let attributes = own_attributes(cls)?;
    // `__module__` travels in the creation namespace (or, for an enum, beside
    // it); `__slotnames__` is copyreg's cache, made when an instance is first
    // pickled (it would make the class's next pickle differ).
    for name in [
        intern!(py, "__module__"),
        intern!(py, "__slotnames__"),
        intern!(py, "__weakref__"),
        intern!(py, "__dict__"),
        intern!(py, "_abc_impl"),
        intern!(py, "_abc_cache"),
        intern!(py, "_abc_negative_cache"),
        intern!(py, "_abc_negative_cache_version"),
        intern!(py, "_abc_registry"),
    ] {
        if attributes.contains(name)? {
            attributes.del_item(name)?;
        }
    }
    // Slot descriptors are made again from __slots__ when the class is created.
    let member_descriptor = statics::member_descriptor_type(py)?;
    let mut slot_names = Vec::new();
    for (name, value) in attributes.iter() {
        if value.get_type().is(member_descriptor)
            && lookup::getattr_opt(&value, intern!(py, "__objclass__"))?.is_some_and(|o| o.is(cls))
        {
            slot_names.push(name);
        }
    }
    for name in slot_names {
        attributes.del_item(name)?;
    }
    let mut registry = py.None().into_bound(py);
    if cls.get_type().is_subclass(statics::abc_meta(py)?)? {
        let dump = py.import("abc")?.getattr("_get_dump")?.call1((cls,))?;
        let weak_refs = dump.get_item(0)?;
        let mut subclasses = Vec::new();
        for weak in weak_refs.try_iter()? {
            let subclass = weak?.call0()?;
            if !subclass.is_none() {
                let qualname = subclass.getattr(intern!(py, "__qualname__"))?.to_string();
                subclasses.push((qualname, subclass));
            }
        }
        if !subclasses.is_empty() {
            // The registry is a set: order it for deterministic output.
            subclasses.sort_by(|a, b| a.0.cmp(&b.0));
            registry = PyTuple::new(py, subclasses.into_iter().map(|(_, s)| s))?.into_any();
        }
    }
    Ok((attributes, registry))
}

/// Attributes every enum class gets from its metaclass: not shipped (the
/// caches of member values would arrive as copies that no longer share their
/// strings with the members').
const ENUM_INTERNALS: [&str; 8] = [
    "_generate_next_value_",
    "_member_names_",
    "_member_map_",
    "_member_type_",
    "_value2member_map_",
    "_hashable_values_",
    "_unhashable_values_",
    "_unhashable_values_map_",
];

/// `(make_enum, (bases, name, qualname, members, module, tracker_id), (attributes, None), ..., class_setstate)`.
/// `members` comes from `__members__`, so aliases are kept.
fn reduce_enum<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    use enum_args as arg;
    let py = cls.py();
    let members = PyDict::new(py);
    for (name, member) in cls
        .getattr(intern!(py, "__members__"))?
        .call_method0("items")?
        .try_iter()?
        .map(|i| i.and_then(|i| i.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()))
        .collect::<PyResult<Vec<_>>>()?
    {
        // A tracked enum keeps its members when loaded again in this process:
        // a str value shared with other data of the pickle could not stay
        // shared, so it travels as a name would.
        let value = names::canonical(member.getattr(intern!(py, "_value_"))?)?;
        members.set_item(names::canonical(name)?, value)?;
    }
    let (attributes, _) = class_state(cls)?;
    for name in ENUM_INTERNALS
        .iter()
        .map(|n| PyString::new(py, n).into_any())
        .chain(members.keys().iter())
    {
        if attributes.contains(&name)? {
            attributes.del_item(&name)?;
        }
    }
    let mut args: [Option<Bound<'py, PyAny>>; enum_args::LEN] = Default::default();
    args[arg::BASES] = Some(cls.getattr(intern!(py, "__bases__"))?);
    args[arg::NAME] = Some(names::canonical(cls.getattr(intern!(py, "__name__"))?)?);
    args[arg::QUALNAME] = Some(names::canonical(cls.getattr(intern!(py, "__qualname__"))?)?);
    args[arg::MEMBERS] = Some(members.into_any());
    args[arg::MODULE] = Some(names::canonical(cls.getattr(intern!(py, "__module__"))?)?);
    let no_registry = py.None().into_bound(py);
    tracked(
        cls,
        Reconstructor::MakeEnum,
        args,
        arg::TRACKER_ID,
        attributes,
        no_registry,
    )
}

/// An enum member as `getattr(its class, its name)`, when that gives it
/// back and the class keeps `Enum.__reduce_ex__` (which writes the value):
/// the name is canonical, so which of the sender's strings happened to be
/// the member's value never changes the bytes.
pub fn reduce_enum_member<'py>(member: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = member.py();
    let not_implemented = || Ok(py.NotImplemented().into_bound(py));
    let cls = member.get_type();
    let enum_reduce = statics::enum_class(py)?.getattr(intern!(py, "__reduce_ex__"))?;
    if !cls.getattr(intern!(py, "__reduce_ex__"))?.is(&enum_reduce) {
        return not_implemented();
    }
    let Some(name) = lookup::getattr_opt(member, intern!(py, "_name_"))?
        .filter(pyo3::types::PyAnyMethods::is_exact_instance_of::<PyString>)
    else {
        return not_implemented();
    };
    let members = cls.getattr(intern!(py, "_member_map_"))?;
    if !lookup::mapping_get(&members, &name)?.is_some_and(|m| m.is(member)) {
        // A combination of flags, or an alias: not reachable by that name.
        return not_implemented();
    }
    reduce_to_getattr(cls.into_any(), names::canonical(name)?)
}

// ---------------------------------------------------------------------------
// Loading.

/// A class of the `types` module by name (`FunctionType`, `CodeType`, ...).
#[pyfunction]
pub fn builtin_type<'py>(name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    if name.to_str()? == "ClassType" {
        return Ok(py.get_type::<PyType>().into_any());
    }
    match lookup::getattr_opt(&py.import("types")?.into_any(), name)? {
        Some(cls) if cls.is_instance_of::<PyType>() => Ok(cls),
        _ => Err(PyValueError::new_err(format!(
            "types has no class named {name}"
        ))),
    }
}

/// The classes in `bases`' MROs (other than object) that define
/// `__init_subclass__`: creating a subclass would run the first of them.
fn init_subclass_definers<'py>(bases: &Bound<'py, PyTuple>) -> PyResult<Vec<Bound<'py, PyType>>> {
    let py = bases.py();
    let mut definers: Vec<Bound<'py, PyType>> = Vec::new();
    for base in bases.iter() {
        let Ok(base) = base.cast_into::<PyType>() else {
            continue;
        };
        for klass in base.mro().iter() {
            let klass = klass.cast_into::<PyType>()?;
            if !ffi::is_heap_type(&klass) || definers.iter().any(|d| d.is(&klass)) {
                continue;
            }
            if klass
                .getattr(intern!(py, "__dict__"))?
                .contains(intern!(py, "__init_subclass__"))?
            {
                definers.push(klass);
            }
        }
    }
    Ok(definers)
}

/// `classmethod(lambda cls, *args, **kwargs: None)`.
fn quiet_init_subclass(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static QUIET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    QUIET
        .get_or_try_init(py, || {
            py.eval(
                c"classmethod(lambda cls, *args, **kwargs: None)",
                None,
                None,
            )
            .map(Bound::unbind)
        })
        .map(|q| q.bind(py))
}

/// Creates the class with `type` without running its bases'
/// `__init_subclass__`: the class body's side effects (a base registering
/// its subclasses, say) already happened once, in the sender. The hooks are
/// shadowed only while `type(...)` runs, which executes no Python code, so
/// no other thread can observe it. None when the metaclass is not `type`
/// (the caller then creates the class normally, as cloudpickle does).
fn create_without_init_subclass<'py>(
    metaclass: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    bases: &Bound<'py, PyTuple>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = metaclass.py();
    if !metaclass.is(py.get_type::<PyType>()) {
        return Ok(None);
    }
    let definers = init_subclass_definers(bases)?;
    if definers.is_empty() {
        return Ok(None);
    }
    let name = intern!(py, "__init_subclass__");
    let originals = definers
        .iter()
        .map(|d| d.getattr(intern!(py, "__dict__"))?.get_item(name))
        .collect::<PyResult<Vec<_>>>()?;
    let quiet = quiet_init_subclass(py)?;
    let mut shadowed = Vec::new();
    let mut created = Ok(None);
    for definer in &definers {
        if let Err(e) = definer.setattr(name, quiet) {
            created = Err(e);
            break;
        }
        shadowed.push(definer);
    }
    if created.is_ok() {
        created = metaclass.call1(args).map(Some);
    }
    for (definer, original) in shadowed.into_iter().zip(originals) {
        definer.setattr(name, original)?;
    }
    created
}

/// The class known under `tracker_id` in this process, else a new skeleton
/// class made with `metaclass` from the creation namespace, then tracked.
#[pyfunction]
pub fn make_class<'py>(
    metaclass: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
    bases: &Bound<'py, PyTuple>,
    namespace: &Bound<'py, PyDict>,
    tracker_id: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    if let Some(known) = tracker::tracked(py, tracker_id.to_str()?) {
        return Ok(known);
    }
    let cls = create_class(metaclass, name, bases, namespace)?;
    tracker::lookup_or_track(cls, tracker_id.to_str()?)
}

/// A new class made with `metaclass` (or the most derived metaclass of the
/// bases) from the creation namespace, as a class statement would, but
/// without running the bases' `__init_subclass__` again.
pub fn create_class<'py>(
    metaclass: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
    bases: &Bound<'py, PyTuple>,
    namespace: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    if !metaclass.is_subclass(py.get_type::<PyType>().as_any())? {
        return Err(PyTypeError::new_err(
            "the metaclass must be a subclass of type",
        ));
    }
    let types = py.import("types")?;
    let resolved = types
        .getattr("resolve_bases")?
        .call1((bases,))?
        .cast_into::<PyTuple>()?;
    let create = |namespace: &Bound<'py, PyDict>| -> PyResult<Bound<'py, PyAny>> {
        let kwds = PyDict::new(py);
        kwds.set_item("metaclass", metaclass)?;
        let prepared = types
            .getattr("prepare_class")?
            .call1((name, &resolved, kwds))?
            .cast_into::<PyTuple>()?;
        let (meta, ns, meta_kwds) = (
            prepared.get_item(0)?,
            prepared.get_item(1)?,
            prepared.get_item(2)?.cast_into::<PyDict>()?,
        );
        ns.call_method1(intern!(py, "update"), (namespace,))?;
        if !resolved.is(bases) {
            ns.set_item(intern!(py, "__orig_bases__"), bases)?;
        }
        let args = PyTuple::new(
            py,
            [name.clone().into_any(), resolved.clone().into_any(), ns],
        )?;
        match create_without_init_subclass(&meta, &args, &resolved)? {
            Some(cls) => Ok(cls),
            None => meta.call(args, Some(&meta_kwds)),
        }
    };
    match create(namespace) {
        Ok(cls) => Ok(cls),
        // A metaclass that refuses `__slots__` in a class body (NamedTuple's
        // raises AttributeError) gets the class made without it, as
        // cloudpickle makes every class.
        Err(e)
            if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                && namespace.contains(intern!(py, "__slots__"))? =>
        {
            let without_slots = namespace.copy()?;
            without_slots.del_item(intern!(py, "__slots__"))?;
            create(&without_slots).inspect_err(|second| second.set_cause(py, Some(e)))
        }
        Err(e) => Err(e),
    }
}

/// The enum known under `tracker_id`, else a new enum with these members.
#[pyfunction]
pub fn make_enum<'py>(
    bases: &Bound<'py, PyTuple>,
    name: &Bound<'py, PyString>,
    qualname: &Bound<'py, PyString>,
    members: &Bound<'py, PyDict>,
    module: &Bound<'py, PyAny>,
    tracker_id: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    if let Some(known) = tracker::tracked(py, tracker_id.to_str()?) {
        return Ok(known);
    }
    let last = bases.get_item(
        bases
            .len()
            .checked_sub(1)
            .ok_or_else(|| PyValueError::new_err("an enum needs a base"))?,
    )?;
    let is_enum = match last.cast::<PyType>() {
        Ok(base) => base.is_subclass(statics::enum_class(py)?)?,
        Err(_) => false,
    };
    if !is_enum {
        return Err(PyTypeError::new_err(
            "an enum's last base must be an Enum class",
        ));
    }
    let metaclass = last.get_type();
    let classdict = metaclass.call_method1(intern!(py, "__prepare__"), (name, bases))?;
    for (member, value) in members.iter() {
        classdict.set_item(member, value)?;
    }
    let new = metaclass.getattr(intern!(py, "__new__"))?;
    let cls = new.call1((&metaclass, name, bases, classdict))?;
    cls.setattr(intern!(py, "__module__"), module)?;
    cls.setattr(intern!(py, "__qualname__"), qualname)?;
    tracker::lookup_or_track(cls, tracker_id.to_str()?)
}

/// Sets a class's attributes, then registers its ABC virtual subclasses.
#[pyfunction]
pub fn class_setstate(cls: &Bound<'_, PyAny>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
    let py = cls.py();
    let cls = cls.cast::<PyType>()?;
    if state.len() != class_state::LEN {
        return Err(PyValueError::new_err(
            "class state must be (attributes, registry)",
        ));
    }
    let attributes = state
        .get_item(class_state::ATTRIBUTES)?
        .cast_into::<PyDict>()?;
    for (name, value) in attributes.iter() {
        cls.setattr(name.cast::<PyString>()?, value)?;
    }
    // Setting any attribute on a class drops __firstlineno__ (3.13): restore it.
    if let Some(line) = attributes.get_item("__firstlineno__")? {
        cls.setattr("__firstlineno__", line)?;
    }
    keep_written_order(cls, &attributes)?;
    let registry = state.get_item(class_state::REGISTRY)?;
    if !registry.is_none() {
        for subclass in registry.cast::<PyTuple>()?.iter() {
            cls.call_method1(intern!(py, "register"), (subclass,))?;
        }
    }
    Ok(())
}

/// Setting an attribute appends it to the class's dict unless the class
/// already has it: those its metaclass made when it was created (a
/// NamedTuple's field getters, its `__annotations__`) stay where they are.
/// When the written attributes come out in another order, each is moved to
/// the end in the written order, so that the class lists them as the sender
/// did and pickles to the same bytes again.
fn keep_written_order(cls: &Bound<'_, PyType>, attributes: &Bound<'_, PyDict>) -> PyResult<()> {
    let Some(dict) = ffi::heap_type_dict(cls) else {
        return Ok(());
    };
    let mut current = Vec::with_capacity(attributes.len());
    for (key, value) in dict.iter() {
        if attributes.contains(&key)? {
            current.push((key, value));
        }
    }
    let mut in_order = true;
    let mut position = 0;
    for key in attributes.keys() {
        if position < current.len() && current[position].0.eq(&key)? {
            position += 1;
        } else if dict.contains(&key)? {
            in_order = false;
            break;
        }
    }
    if in_order {
        return Ok(());
    }
    let by_name = PyDict::new(cls.py());
    for (key, value) in &current {
        by_name.set_item(key, (key, value))?;
    }
    for name in attributes.keys() {
        let Some(entry) = by_name.get_item(&name)? else {
            continue;
        };
        let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = entry.extract()?;
        dict.del_item(&key)?;
        dict.set_item(&key, value)?;
    }
    ffi::type_modified(cls);
    Ok(())
}
