//! Canonical names: the strings the reductions write for names (attribute
//! and variable names, a code object's names and identifier-like constants,
//! qualified names, module names).
//!
//! The C pickler shares a memo entry between two occurrences of one object,
//! so the bytes depend on which strings are the same object. In the sender, a
//! name and a string of the user's data are often one interned object; after
//! loading, CPython interns names again (setattr, code objects) while the data
//! keeps the unpickled object, and pickling again would share differently.
//! Every name therefore goes through [`canonical`]: one object per value, a
//! copy that no user data can hold, so names share memo entries with each
//! other by value only and never with data. Data strings keep their identity,
//! which the memo carries across a round trip.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

/// Value -> its canonical copy. Grows with the distinct names pickled, as
/// CPython's own table of interned strings does.
fn table(py: Python<'_>) -> &Bound<'_, PyDict> {
    static TABLE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    TABLE.get_or_init(py, || PyDict::new(py).unbind()).bind(py)
}

/// The canonical copy of `s` when it is an exact str; anything else as it is.
pub fn canonical(s: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    let Ok(text) = s.cast_exact::<PyString>() else {
        return Ok(s);
    };
    let py = s.py();
    let table = table(py);
    if let Some(copy) = table.get_item(text)? {
        return Ok(copy);
    }
    // A new object of the same value, also for one character (whose str
    // constructors return CPython's shared object, which the unpickler gives
    // data too). The empty str is one object everywhere; a str that is not
    // valid UTF-8 (lone surrogates) stands for itself.
    let copy = match text.to_str() {
        Ok(value) => {
            let mut chars = value.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => crate::ffi::unshared_char(py, c)?.into_any(),
                _ => PyString::new(py, value).into_any(),
            }
        }
        Err(_) => s.clone(),
    };
    table.set_item(&copy, &copy)?;
    Ok(copy)
}

/// Whether CPython interns `s` when it is a code object's constant (a
/// string of ASCII letters, digits and underscores): it is a name then.
pub fn is_name_like(s: &Bound<'_, PyString>) -> bool {
    s.to_str()
        .is_ok_and(|text| text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The canonical copy of a name given as text, made once per call site.
#[macro_export]
macro_rules! name {
    ($py:expr, $text:literal) => {{
        static NAME: pyo3::sync::PyOnceLock<pyo3::Py<pyo3::PyAny>> = pyo3::sync::PyOnceLock::new();
        NAME.get_or_try_init($py, || {
            $crate::support::names::canonical(pyo3::types::PyString::new($py, $text).into_any())
                .map(pyo3::Bound::unbind)
        })
        .map(|name| name.bind($py).clone())
    }};
}

#[cfg(test)]
mod tests {
    use super::{canonical, is_name_like};
    use pyo3::prelude::*;
    use pyo3::types::PyString;

    #[test]
    fn identifier_like_strings_are_names() {
        Python::attach(|py| {
            for name in ["join", "arg_1", "_", "Point2D"] {
                assert!(is_name_like(&PyString::new(py, name)), "{name}");
            }
            for text in ["a b", "x.y", "", "é"] {
                assert_eq!(
                    is_name_like(&PyString::new(py, text)),
                    text.is_empty(),
                    "{text}"
                );
            }
        });
    }

    #[test]
    fn equal_names_give_one_canonical_copy_that_no_data_holds() {
        Python::attach(|py| -> PyResult<()> {
            let data = PyString::new(py, "x").into_any();
            let first = canonical(PyString::new(py, "x").into_any())?;
            let second = canonical(data.clone())?;
            assert!(first.is(&second));
            assert!(!first.is(&data));
            assert!(
                !first.is(PyString::new(py, "x")),
                "not CPython's shared one-character str"
            );
            Ok(())
        })
        .unwrap();
    }
}
