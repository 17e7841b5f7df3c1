//! Content-addressed revision ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Manifest;

/// The shortest revision prefix accepted in `name@rev`.
pub const MIN_PREFIX_LEN: usize = 8;

/// A revision id: the lower-case hex sha256 of a revision's code followed by
/// its canonical manifest JSON. Two deploys of the same code and manifest
/// produce the same id; any change to either produces another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevisionId(String);

impl RevisionId {
    /// Computes the id of `code` deployed with `manifest`.
    pub fn compute(code: &[u8], manifest: &Manifest) -> Self {
        let mut h = Sha256::new();
        h.update(b"colony-revision-v1\0");
        h.update((code.len() as u64).to_le_bytes());
        h.update(code);
        h.update(manifest.canonical_json().as_bytes());
        Self(hex::encode(h.finalize()))
    }

    /// Wraps an id read back from storage; `None` if it is not 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    /// The full hex id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first twelve hex digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` can name a revision: lower-case hex, 8 to 64 digits.
pub fn is_valid_prefix(s: &str) -> bool {
    (MIN_PREFIX_LEN..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The lower-case hex sha256 of `bytes` (used to address code blobs).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RevisionId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A revision id: the lower-case hex sha256 of the code and the canonical manifest.",
            ))
            .pattern(Some("^[0-9a-f]{64}$"))
            .min_length(Some(64))
            .max_length(Some(64))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RevisionId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_code_and_manifest() {
        let m = Manifest::default();
        let a = RevisionId::compute(b"code", &m);
        assert_eq!(a, RevisionId::compute(b"code", &m));
        assert_ne!(a, RevisionId::compute(b"code2", &m));
        let mut m2 = m.clone();
        m2.args.push("x".into());
        assert_ne!(a, RevisionId::compute(b"code", &m2));
        assert_eq!(a.as_str().len(), 64);
        assert_eq!(RevisionId::from_hex(a.as_str()), Some(a.clone()));
        assert_eq!(RevisionId::from_hex("zz"), None);
    }
}
