//! A code object's blob: its numbers and byte tables in one bytes object,
//! written once per code object (code is immutable) and copied into every
//! pickle that ships it. Its names and constants travel beside it as
//! objects, so that the pickle's memo shares them across functions.
//!
//! Layout (integers as zigzag LEB128 varints):
//!
//! ```text
//! b"C" FORMAT major minor
//! the integers of `code_ints`, in order
//! the counts of `code_counts`, in order
//! the number of tables, then each as its length and its bytes: the
//!   bytecode, then the version's line table and exception table (`table_names`)
//! ```
//!
//! Decoding checks every length against what remains: a corrupted blob is an
//! error, never a read past its end.

use crate::layout;

/// The first byte of every blob.
const MAGIC: u8 = b'C';

layout! {
    /// The integers of a code object, in blob order.
    pub mod code_ints {
        ARGCOUNT = "argcount",
        POSONLYARGCOUNT = "posonlyargcount",
        KWONLYARGCOUNT = "kwonlyargcount",
        NLOCALS = "nlocals",
        STACKSIZE = "stacksize",
        FLAGS = "flags",
        FIRSTLINENO = "firstlineno",
    }
}

layout! {
    /// How many of each run of the objects beside the blob (which then end
    /// with the file name, the name and, from 3.11, the qualified name).
    pub mod code_counts {
        CONSTS = "consts",
        NAMES = "names",
        VARNAMES = "varnames",
        FREEVARS = "freevars",
        CELLVARS = "cellvars",
    }
}

/// The byte tables of a code object of CPython `version`, in blob order.
pub fn table_names(version: (u8, u8)) -> &'static [&'static str] {
    match version {
        (3, minor) if minor >= 11 => &["code", "linetable", "exceptiontable"],
        (3, 10) => &["code", "linetable"],
        _ => &["code", "lnotab"],
    }
}

/// The names that end the objects beside the blob, after the runs of `code_counts`.
pub fn trailing_names(version: (u8, u8)) -> &'static [&'static str] {
    if version >= (3, 11) {
        &["filename", "name", "qualname"]
    } else {
        &["filename", "name"]
    }
}

/// The most byte tables a version has (`table_names`).
pub const MAX_TABLES: usize = 3;

/// A decoded blob; its tables borrow the bytes it was read from (those
/// past the version's `table_names` are empty).
#[derive(Debug, PartialEq, Eq)]
pub struct Blob<'a> {
    pub format: u8,
    pub version: (u8, u8),
    pub ints: [i64; code_ints::LEN],
    pub counts: [usize; code_counts::LEN],
    pub tables: [&'a [u8]; MAX_TABLES],
}

impl Blob<'_> {
    /// How many objects travel beside the blob.
    pub fn objects(&self) -> usize {
        self.counts.iter().sum::<usize>() + trailing_names(self.version).len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MAGIC, self.format, self.version.0, self.version.1];
        for &value in &self.ints {
            write_varint(&mut out, zigzag(value));
        }
        for &count in &self.counts {
            write_varint(&mut out, count as u64);
        }
        let tables = &self.tables[..table_names(self.version).len()];
        write_varint(&mut out, tables.len() as u64);
        for table in tables {
            write_varint(&mut out, table.len() as u64);
            out.extend_from_slice(table);
        }
        out
    }

    /// Reads a blob; the header is read before anything else, so that a
    /// blob of another format or CPython version is reported as such.
    pub fn decode(bytes: &[u8]) -> Result<Blob<'_>, String> {
        let mut reader = Reader { bytes, at: 0 };
        let header = reader.take(4)?;
        if header[0] != MAGIC {
            return Err("it is not a code blob".to_owned());
        }
        let mut blob = Blob {
            format: header[1],
            version: (header[2], header[3]),
            ints: [0; code_ints::LEN],
            counts: [0; code_counts::LEN],
            tables: [&[]; MAX_TABLES],
        };
        for value in &mut blob.ints {
            *value = unzigzag(reader.varint()?);
        }
        for count in &mut blob.counts {
            *count = reader.length()?;
        }
        let tables = reader.length()?;
        if tables != table_names(blob.version).len() {
            return Err(format!("it has {tables} byte tables"));
        }
        for table in &mut blob.tables[..tables] {
            let length = reader.length()?;
            *table = reader.take(length)?;
        }
        if reader.at != bytes.len() {
            return Err("bytes follow its last table".to_owned());
        }
        Ok(blob)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| "it ends early".to_owned())?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, String> {
        if let Some(&byte) = self.bytes.get(self.at) {
            if byte < 0x80 {
                self.at += 1;
                return Ok(u64::from(byte));
            }
        }
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number in it is too long".to_owned())
    }

    /// A count or length: no larger than the bytes the blob has (each item
    /// takes at least one byte somewhere), which bounds what decoding allocates.
    fn length(&mut self) -> Result<usize, String> {
        usize::try_from(self.varint()?)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| "a length in it is out of range".to_owned())
    }
}

// Bit twiddling: the casts keep exactly the bits meant.
#[allow(clippy::cast_possible_truncation)]
fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[allow(clippy::cast_sign_loss)]
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[allow(clippy::cast_possible_wrap)]
fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::{unzigzag, zigzag, Blob};

    fn sample() -> Blob<'static> {
        Blob {
            format: 1,
            version: (3, 11),
            ints: [2, 0, 1, 3, 4, 0x0300_0003, -7],
            counts: [1, 2, 3, 0, 1],
            tables: [b"\x97\x00|\x00S\x00", b"", b"\x80\x00"],
        }
    }

    #[test]
    fn a_blob_decodes_to_what_was_encoded() {
        let blob = sample();
        assert_eq!(Blob::decode(&blob.encode()), Ok(sample()));
        assert_eq!(blob.objects(), 7 + 3);
    }

    #[test]
    fn zigzag_keeps_signs_and_extremes() {
        for value in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
    }

    #[test]
    fn truncated_extended_or_forged_blobs_are_errors() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Blob::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Blob::decode(&longer).is_err());
        let mut forged = bytes.clone();
        forged[0] = b'X';
        assert!(Blob::decode(&forged).is_err());
        let huge_count = [b'C', 1, 3, 11, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f];
        assert!(Blob::decode(&huge_count).is_err());
    }

    #[test]
    fn the_header_is_read_whatever_follows() {
        let mut other = sample();
        other.version = (3, 9);
        other.tables[2] = b"";
        let encoded = other.encode();
        let decoded = Blob::decode(&encoded).unwrap();
        assert_eq!((decoded.format, decoded.version), (1, (3, 9)));
    }
}
