//! Named files: the payload of a function on the `files` I/O runtime.
//!
//! A call's input files and its output files travel through Colony (task
//! inputs and results, forwarded calls, the stores) as one encoded
//! [`FileSet`], so everything that carries bytes carries files too.
//! The encoding is `COLONYFS1\n`, the count (u32), then per file its
//! name's length (u16), the name, its size (u64) and its bytes, all
//! little-endian, names sorted and unique.

use bytes::{BufMut, Bytes, BytesMut};

/// Most files in a set.
pub const MAX_FILES: usize = 64;
/// Longest file name, in bytes.
pub const MAX_FILE_NAME: usize = 128;

const MAGIC: &[u8] = b"COLONYFS1\n";

/// Whether `name` may name a file of a set: 1 to 128 bytes of ASCII
/// letters, digits, `.`, `_` and `-`, not `.` or `..` (no `/`: files sit
/// directly in `/input` and `/output`).
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Named files, sorted by name, names unique and valid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSet {
    files: Vec<(String, Bytes)>,
}

impl FileSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file; refuses an invalid or repeated name, or a 65th file.
    pub fn insert(&mut self, name: &str, data: Bytes) -> Result<(), String> {
        if !valid_file_name(name) {
            return Err(format!(
                "{name:?} is not a file name (1 to {MAX_FILE_NAME} letters, digits, '.', '_' \
                 or '-'; not . or ..)"
            ));
        }
        if self.files.len() == MAX_FILES {
            return Err(format!("more than {MAX_FILES} files"));
        }
        match self.files.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(_) => Err(format!("file {name} is given twice")),
            Err(at) => {
                self.files.insert(at, (name.to_owned(), data));
                Ok(())
            }
        }
    }

    /// The file named `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.files
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.files[i].1)
    }

    /// The files, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.files.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The bytes of all files together.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, d)| d.len() as u64).sum()
    }

    /// The encoded form.
    pub fn encode(&self) -> Bytes {
        let size: usize = self.files.iter().map(|(n, d)| 10 + n.len() + d.len()).sum();
        let mut out = BytesMut::with_capacity(MAGIC.len() + 4 + size);
        out.put_slice(MAGIC);
        out.put_u32_le(self.files.len() as u32);
        for (name, data) in &self.files {
            out.put_u16_le(name.len() as u16);
            out.put_slice(name.as_bytes());
            out.put_u64_le(data.len() as u64);
            out.put_slice(data);
        }
        out.freeze()
    }

    /// Decodes an encoded set (the files share `bytes`' buffer).
    pub fn decode(bytes: &Bytes) -> Result<Self, String> {
        let short = || "the file set is cut short".to_owned();
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| "not a file set (the payload of a files function)".to_owned())?;
        let mut at = MAGIC.len();
        let take = |at: &mut usize, n: usize| -> Result<Bytes, String> {
            if bytes.len() - *at < n {
                return Err(short());
            }
            let b = bytes.slice(*at..*at + n);
            *at += n;
            Ok(b)
        };
        if rest.len() < 4 {
            return Err(short());
        }
        let count = u32::from_le_bytes(take(&mut at, 4)?[..].try_into().expect("4 bytes"));
        if count as usize > MAX_FILES {
            return Err(format!("more than {MAX_FILES} files"));
        }
        let mut set = FileSet::new();
        for _ in 0..count {
            let len = u16::from_le_bytes(take(&mut at, 2)?[..].try_into().expect("2 bytes"));
            let name = take(&mut at, len as usize)?;
            let name = std::str::from_utf8(&name).map_err(|_| "a file name is not UTF-8")?;
            let size = u64::from_le_bytes(take(&mut at, 8)?[..].try_into().expect("8 bytes"));
            let size = usize::try_from(size).map_err(|_| short())?;
            let data = take(&mut at, size)?;
            set.insert(name, data)?;
        }
        if at != bytes.len() {
            return Err("bytes after the last file".to_owned());
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_round_trips_and_keeps_names_sorted() {
        let mut s = FileSet::new();
        s.insert("b.txt", Bytes::from_static(b"bee")).unwrap();
        s.insert("a.txt", Bytes::from_static(b"")).unwrap();
        s.insert("c-1_x.bin", Bytes::from(vec![0u8; 1000])).unwrap();
        let d = FileSet::decode(&s.encode()).unwrap();
        assert_eq!(d, s);
        let names: Vec<_> = d.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.txt", "b.txt", "c-1_x.bin"]);
        assert_eq!(d.get("b.txt").unwrap().as_ref(), b"bee");
        assert_eq!(d.total_bytes(), 1003);
    }

    #[test]
    fn bad_names_repeats_and_torn_sets_are_refused() {
        let mut s = FileSet::new();
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "/etc",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(s.insert(bad, Bytes::new()).is_err(), "{bad:?}");
        }
        s.insert("a", Bytes::new()).unwrap();
        assert!(s.insert("a", Bytes::new()).is_err());
        let enc = s.encode();
        for cut in 0..enc.len() {
            assert!(FileSet::decode(&enc.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = enc.to_vec();
        longer.push(0);
        assert!(FileSet::decode(&Bytes::from(longer)).is_err());
        assert!(FileSet::decode(&Bytes::from_static(b"plain input")).is_err());
        // A name with a slash smuggled into the encoding is refused too.
        let mut evil = FileSet::new();
        evil.insert("aa.txt", Bytes::new()).unwrap();
        let evil = evil.encode().to_vec();
        let evil = String::from_utf8_lossy(&evil)
            .replace("aa.txt", "../etc")
            .into_bytes();
        assert!(FileSet::decode(&Bytes::from(evil)).is_err());
    }
}
