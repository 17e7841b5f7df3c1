//! Function names and references.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest function name accepted (the name itself, not a `@rev` suffix).
pub const MAX_NAME_LEN: usize = 63;

/// [`FunctionName`]'s rule as an ECMA-262 regular expression (for OpenAPI).
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// [`FunctionRef`]'s rule as an ECMA-262 regular expression (for OpenAPI):
/// a name, then optionally `@` and 8 to 64 hex digits of any case.
pub const REF_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}(@[0-9a-fA-F]{8,64})?$";

/// A validated function name: `[a-z0-9][a-z0-9_-]{0,62}`.
///
/// The rule keeps names safe as path segments, file names, SQL keys and
/// (later) NATS subject tokens: no dots, slashes, spaces or upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FunctionName(String);

/// Why a function name or reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("function name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("function name is {len} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// Length of the rejected name.
        len: usize,
    },
    /// The name contains a character outside `[a-z0-9_-]` or starts with `_`/`-`.
    #[error(
        "function name {name:?} is invalid: use lower-case letters, digits, '-' and '_', starting with a letter or digit"
    )]
    Invalid {
        /// The rejected name.
        name: String,
    },
    /// The revision part of `name@rev` is not a hex revision id or prefix.
    #[error(
        "revision {rev:?} is invalid: give a revision id or a prefix of at least {} hex characters",
        crate::revision::MIN_PREFIX_LEN
    )]
    InvalidRevision {
        /// The rejected revision text.
        rev: String,
    },
}

impl FunctionName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: name.len() });
        }
        let bytes = name.as_bytes();
        let first_ok = bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit();
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if !first_ok || !rest_ok {
            return Err(NameError::Invalid { name });
        }
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for FunctionName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for FunctionName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// A reference to a function: `name` (its default revision) or `name@rev`
/// (a pinned revision, by full id or unique hex prefix).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FunctionRef {
    /// The function.
    pub name: FunctionName,
    /// A revision id or hex prefix, lower-case; `None` means the default.
    pub rev: Option<String>,
}

impl FunctionRef {
    /// Parses `name` or `name@rev`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        match s.split_once('@') {
            None => Ok(Self {
                name: FunctionName::new(s)?,
                rev: None,
            }),
            Some((name, rev)) => {
                let name = FunctionName::new(name)?;
                let rev = rev.to_ascii_lowercase();
                if !crate::revision::is_valid_prefix(&rev) {
                    return Err(NameError::InvalidRevision { rev });
                }
                Ok(Self {
                    name,
                    rev: Some(rev),
                })
            }
        }
    }
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rev {
            None => write!(f, "{}", self.name),
            Some(rev) => write!(f, "{}@{}", self.name, rev),
        }
    }
}

impl FromStr for FunctionRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(feature = "openapi")]
mod schema {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    use super::*;

    impl utoipa::PartialSchema for FunctionName {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "A function name: lower-case letters, digits, `-` and `_`, starting with a \
                     letter or digit, at most 63 characters.",
                ))
                .pattern(Some(NAME_PATTERN))
                .min_length(Some(1))
                .max_length(Some(MAX_NAME_LEN))
                .examples(["echo"])
                .into()
        }
    }

    impl utoipa::ToSchema for FunctionName {}

    impl utoipa::PartialSchema for FunctionRef {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "A function reference: `name` (its default revision) or `name@rev`, where \
                     `rev` is a revision id or a unique prefix of at least 8 hex digits.",
                ))
                .pattern(Some(REF_PATTERN))
                .min_length(Some(1))
                .examples(["echo"])
                .into()
        }
    }

    impl utoipa::ToSchema for FunctionRef {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in [
            "a",
            "echo",
            "json-transform",
            "a_b",
            "0day",
            &"x".repeat(63),
        ] {
            assert_eq!(FunctionName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_path_tricks_and_bad_characters() {
        for bad in [
            "..", "../etc", "a/b", "A", "-a", "_a", "a.b", "a b", "é", "a\0", "a@b",
        ] {
            assert!(FunctionName::new(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(FunctionName::new(""), Err(NameError::Empty));
        assert_eq!(
            FunctionName::new("x".repeat(64)),
            Err(NameError::TooLong { len: 64 })
        );
    }

    /// The OpenAPI patterns say what the parsers do (checked by hand here;
    /// core has no regex engine): the parts of the patterns are the same
    /// constants the code uses.
    #[test]
    fn patterns_follow_the_rules() {
        assert!(NAME_PATTERN.contains(&format!("{{0,{}}}", MAX_NAME_LEN - 1)));
        assert!(REF_PATTERN.starts_with(NAME_PATTERN.trim_end_matches('$')));
        assert!(REF_PATTERN.contains(&format!("{{{},64}}", crate::revision::MIN_PREFIX_LEN)));
    }

    #[test]
    fn parses_references() {
        let r = FunctionRef::parse("echo").unwrap();
        assert_eq!((r.name.as_str(), r.rev), ("echo", None));
        let r = FunctionRef::parse("echo@ABCDEF12").unwrap();
        assert_eq!(r.rev.as_deref(), Some("abcdef12"));
        assert_eq!(r.to_string(), "echo@abcdef12");
        assert!(matches!(
            FunctionRef::parse("echo@xyz"),
            Err(NameError::InvalidRevision { .. })
        ));
        assert!(matches!(
            FunctionRef::parse("echo@abc"),
            Err(NameError::InvalidRevision { .. })
        ));
        assert!(FunctionRef::parse("Echo@abcdef12").is_err());
    }
}
