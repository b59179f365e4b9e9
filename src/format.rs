//! Wire layouts: which position of a reconstructor's arguments, or of a
//! state tuple, holds what. Each kind declares its layouts at its top with
//! [`layout!`]; they are exported to Python as `_native.FORMAT` so that the
//! inspector, the compat writer and the diagnostics index by name.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyModule, PyTuple};

use crate::support::statics;

/// The version of the format our pickles are written in. A pickle names it
/// in its one global ([`GLOBAL_NAME`]) and in every code blob; a receiver
/// that reads another refuses it by name (`_native.FORMAT["version"]`).
/// Format 1 named `_native.reconstructor(name, 1)`, which says so on load.
pub const VERSION: u8 = 2;

/// The global every pickle of ours names (`cloudpickle_rs.rebuild_v2`, see
/// `reconstructors::Rebuild`): a receiver without it reads another format.
pub const GLOBAL_NAME: &str = "rebuild_v2";

/// Refuses a pickle written in another format than [`VERSION`].
pub fn check_version(found: u8) -> PyResult<()> {
    if found == VERSION {
        return Ok(());
    }
    Err(other_format(&found.to_string()))
}

/// [`check_version`] of a format number read from a pickle, any object.
pub fn check_version_object(found: &Bound<'_, PyAny>) -> PyResult<()> {
    match found.cast_exact::<PyInt>().map(|n| n.extract::<u8>()) {
        Ok(Ok(found)) => check_version(found),
        _ => Err(other_format(&found.repr()?.to_string())),
    }
}

fn other_format(found: &str) -> PyErr {
    statics::UnpicklingError::new_err(format!(
        "this pickle was written in cloudpickle-rs's format {found}; cloudpickle-rs {} reads format {VERSION}: \
         load it with the cloudpickle-rs release that wrote it",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Declares a layout: a module of position constants, `LEN` and `FIELD_NAMES`.
#[macro_export]
macro_rules! layout {
    ($(#[$doc:meta])* $vis:vis mod $module:ident { $($(#[$fdoc:meta])* $field:ident = $name:literal,)* }) => {
        $(#[$doc])*
        $vis mod $module {
            #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
            enum Position { $($field,)* Len }
            $($(#[$fdoc])* #[allow(dead_code)] pub const $field: usize = Position::$field as usize;)*
            /// How many fields.
            #[allow(dead_code)]
            pub const LEN: usize = Position::Len as usize;
            /// The fields' names by position (exported in `_native.FORMAT`).
            pub const FIELD_NAMES: [&str; LEN] = [$($name,)*];
        }
    };
}

/// Adds `FORMAT`, an empty dict the kinds fill with [`export`], to the module.
pub fn start(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let format = PyDict::new(m.py());
    format.set_item("version", VERSION)?;
    format.set_item("global", GLOBAL_NAME)?;
    m.add("FORMAT", format)
}

/// `_native.FORMAT[name] = fields`.
pub fn export(m: &Bound<'_, PyModule>, name: &str, fields: &[&str]) -> PyResult<()> {
    let format = m.getattr("FORMAT")?.cast_into::<PyDict>()?;
    format.set_item(name, PyTuple::new(m.py(), fields)?)
}

/// The tuple of a layout's `fields`, a field left unset written as None.
pub fn tuple<'py, const N: usize>(
    py: Python<'py>,
    fields: [Option<Bound<'py, PyAny>>; N],
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        fields
            .into_iter()
            .map(|field| field.unwrap_or_else(|| py.None().into_bound(py))),
    )
}

#[cfg(test)]
mod tests {
    crate::layout! {
        mod sample {
            FIRST = "first",
            SECOND = "second",
            THIRD = "third",
        }
    }

    #[test]
    fn the_global_names_the_format_version() {
        assert_eq!(super::GLOBAL_NAME, format!("rebuild_v{}", super::VERSION));
    }

    #[test]
    fn positions_follow_declaration_order_and_names_match_them() {
        assert_eq!((sample::FIRST, sample::SECOND, sample::THIRD), (0, 1, 2));
        assert_eq!(sample::LEN, 3);
        assert_eq!(sample::FIELD_NAMES[sample::SECOND], "second");
    }
}
