//! Sizes in the workspace file: a number of bytes, or a string with a unit (`512KB`, `10MB`).

use serde::de::{Deserialize, Deserializer, Error, Visitor};

/// A size in bytes, at least 1. Written as a whole number of bytes or as a whole number with a
/// unit: `B`, `KB`, `MB`, `GB` (powers of 1024; `KiB`, `MiB`, `GiB` mean the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 7] = [
    ("GIB", 1 << 30),
    ("MIB", 1 << 20),
    ("KIB", 1 << 10),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    /// Parses `10MB`, `512 KB`, `4096` or `4096B`; the error says what is expected.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let expected =
            || format!("expected a size such as 10MB, 512KB or a number of bytes, got {text:?}");
        let upper = text.trim().to_ascii_uppercase();
        let (number, unit) = UNITS
            .iter()
            .find_map(|(name, unit)| upper.strip_suffix(name).map(|n| (n.trim_end(), *unit)))
            .unwrap_or((upper.as_str(), 1));
        let number: u64 = number.parse().map_err(|_| expected())?;
        let bytes = number.checked_mul(unit).ok_or_else(expected)?;
        ByteSize::positive(bytes).ok_or_else(|| format!("must be more than 0 bytes, got {text:?}"))
    }

    fn positive(bytes: u64) -> Option<ByteSize> {
        (bytes > 0).then_some(ByteSize(bytes))
    }
}

impl std::fmt::Display for ByteSize {
    /// In the largest unit that divides it: `10 MB`, `1536 KB`, `1000 bytes`.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let unit = UNITS[3..6]
            .iter()
            .find(|(_, unit)| self.0.is_multiple_of(*unit));
        match unit {
            Some((name, unit)) => write!(f, "{} {name}", self.0 / unit),
            None => write!(f, "{} bytes", self.0),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a size such as 10MB, 512KB or a number of bytes")
    }

    fn visit_u64<E: Error>(self, bytes: u64) -> Result<ByteSize, E> {
        ByteSize::positive(bytes).ok_or_else(|| E::custom("must be more than 0 bytes, got 0"))
    }

    fn visit_i64<E: Error>(self, bytes: i64) -> Result<ByteSize, E> {
        let bytes = u64::try_from(bytes)
            .map_err(|_| E::custom(format_args!("must be more than 0 bytes, got {bytes}")))?;
        self.visit_u64(bytes)
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<ByteSize, E> {
        ByteSize::parse(text).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_numbers_with_a_unit() {
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10 << 20)));
        assert_eq!(ByteSize::parse("512 kb"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("2GiB"), Ok(ByteSize(2 << 30)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("7B"), Ok(ByteSize(7)));
        for bad in ["", "MB", "1.5MB", "-1", "10 TB", "99999999999999999999GB"] {
            let error = ByteSize::parse(bad).unwrap_err();
            assert!(error.contains("expected a size"), "{bad}: {error}");
        }
        assert!(ByteSize::parse("0KB").unwrap_err().contains("more than 0"));
    }

    #[test]
    fn sizes_print_in_their_largest_whole_unit() {
        assert_eq!(ByteSize(10 << 20).to_string(), "10 MB");
        assert_eq!(ByteSize(1536 << 10).to_string(), "1536 KB");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
    }
}
