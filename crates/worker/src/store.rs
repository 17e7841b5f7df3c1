//! The embedded SQLite store of functions and revisions.
//!
//! WAL mode with `synchronous=FULL`: a deploy that returned survives a
//! killed process and a power loss. The store is written on deploys,
//! default switches and deletes only; invocations read the in-memory
//! registry, never SQLite.

use std::path::Path;
use std::time::Duration;

use colony_core::{FunctionName, Manifest, RevisionId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS functions (
    name        TEXT PRIMARY KEY,
    default_rev TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    number      INTEGER NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size   INTEGER NOT NULL,
    manifest    TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (function, id),
    UNIQUE (function, number)
);
CREATE INDEX IF NOT EXISTS revisions_by_code ON revisions(code_sha256);
";

/// One stored revision.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RevisionRow {
    pub(crate) id: RevisionId,
    pub(crate) number: u32,
    pub(crate) code_sha256: String,
    pub(crate) code_size: u64,
    pub(crate) manifest: Manifest,
    pub(crate) created_ms: i64,
}

/// One stored function with its revisions, oldest first.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct FunctionRow {
    pub(crate) name: FunctionName,
    pub(crate) default_rev: RevisionId,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
    pub(crate) revisions: Vec<RevisionRow>,
}

#[derive(Debug)]
pub(crate) struct Store {
    conn: Connection,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Internal(format!(
                "SQLite refused WAL mode (got {mode})"
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(Ok(SCHEMA_VERSION)) => {}
            Some(other) => {
                return Err(Error::Internal(format!(
                    "{} has schema version {other:?}; this worker understands {SCHEMA_VERSION}",
                    path.display()
                )));
            }
        }
        Ok(Self { conn })
    }

    /// Every function with its revisions.
    pub(crate) fn load_all(&self) -> Result<Vec<FunctionRow>> {
        let mut out = Vec::new();
        let mut fstmt = self.conn.prepare(
            "SELECT name, default_rev, created_ms, updated_ms FROM functions ORDER BY name",
        )?;
        let mut rstmt = self.conn.prepare(
            "SELECT id, number, code_sha256, code_size, manifest, created_ms
             FROM revisions WHERE function = ?1 ORDER BY number",
        )?;
        let funcs = fstmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (name, default_rev, created_ms, updated_ms) in funcs {
            let revisions = rstmt
                .query_map([&name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })?
                .map(|row| {
                    let (id, number, code_sha256, size, manifest, created_ms) = row?;
                    Ok(RevisionRow {
                        id: RevisionId::from_hex(&id).ok_or_else(|| {
                            Error::Internal(format!("corrupt revision id {id:?}"))
                        })?,
                        number,
                        code_sha256,
                        code_size: size as u64,
                        manifest: serde_json::from_str(&manifest).map_err(|e| {
                            Error::Internal(format!("corrupt manifest of {name}@{id}: {e}"))
                        })?,
                        created_ms,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(FunctionRow {
                name: FunctionName::new(name.clone())
                    .map_err(|e| Error::Internal(format!("corrupt function name: {e}")))?,
                default_rev: RevisionId::from_hex(&default_rev)
                    .ok_or_else(|| Error::Internal(format!("corrupt default of {name}")))?,
                created_ms,
                updated_ms,
                revisions,
            });
        }
        Ok(out)
    }

    /// Adds a revision (numbered after the function's last one), creating
    /// the function if needed; makes it the default when `make_default` or
    /// when the function is new. Returns the revision's number.
    pub(crate) fn insert_revision(
        &mut self,
        name: &FunctionName,
        rev: &RevisionRow,
        make_default: bool,
    ) -> Result<u32> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO functions(name, default_rev, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(name) DO NOTHING",
            params![name.as_str(), rev.id.as_str(), now],
        )?;
        let number: u32 = tx.query_row(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE function = ?1",
            [name.as_str()],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO revisions(function, id, number, code_sha256, code_size, manifest, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name.as_str(),
                rev.id.as_str(),
                number,
                rev.code_sha256,
                rev.code_size as i64,
                rev.manifest.canonical_json(),
                rev.created_ms
            ],
        )?;
        if make_default {
            tx.execute(
                "UPDATE functions SET default_rev = ?2, updated_ms = ?3 WHERE name = ?1",
                params![name.as_str(), rev.id.as_str(), now],
            )?;
        }
        tx.commit()?;
        Ok(number)
    }

    pub(crate) fn set_default(&mut self, name: &FunctionName, rev: &RevisionId) -> Result<()> {
        self.conn.execute(
            "UPDATE functions SET default_rev = ?2, updated_ms = ?3 WHERE name = ?1",
            params![name.as_str(), rev.as_str(), now_ms()],
        )?;
        Ok(())
    }

    /// Deletes a function and its revisions; returns the code hashes no
    /// remaining revision uses, so their blobs can go too.
    pub(crate) fn delete_function(&mut self, name: &FunctionName) -> Result<Vec<String>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let shas: Vec<String> = tx
            .prepare("SELECT DISTINCT code_sha256 FROM revisions WHERE function = ?1")?
            .query_map([name.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        tx.execute("DELETE FROM revisions WHERE function = ?1", [name.as_str()])?;
        tx.execute("DELETE FROM functions WHERE name = ?1", [name.as_str()])?;
        let mut orphaned = Vec::new();
        for sha in shas {
            let used: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM revisions WHERE code_sha256 = ?1)",
                [&sha],
                |r| r.get(0),
            )?;
            if !used {
                orphaned.push(sha);
            }
        }
        tx.commit()?;
        Ok(orphaned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(code: &[u8]) -> RevisionRow {
        let manifest = Manifest::default();
        RevisionRow {
            id: RevisionId::compute(code, &manifest),
            number: 0,
            code_sha256: colony_core::revision::sha256_hex(code),
            code_size: code.len() as u64,
            manifest,
            created_ms: now_ms(),
        }
    }

    #[test]
    fn revisions_persist_with_numbers_and_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("colony.db");
        let name = FunctionName::new("f").unwrap();
        let (a, b) = (row(b"a"), row(b"b"));
        {
            let mut s = Store::open(&path).unwrap();
            assert_eq!(s.insert_revision(&name, &a, true).unwrap(), 1);
            assert_eq!(s.insert_revision(&name, &b, false).unwrap(), 2);
        }
        let s = Store::open(&path).unwrap();
        let all = s.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].default_rev, a.id);
        let ids: Vec<_> = all[0]
            .revisions
            .iter()
            .map(|r| (r.number, r.id.clone()))
            .collect();
        assert_eq!(ids, vec![(1, a.id.clone()), (2, b.id.clone())]);
    }

    #[test]
    fn delete_reports_orphaned_code_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("colony.db")).unwrap();
        let (f, g) = (
            FunctionName::new("f").unwrap(),
            FunctionName::new("g").unwrap(),
        );
        let shared = row(b"shared");
        s.insert_revision(&f, &shared, true).unwrap();
        s.insert_revision(&f, &row(b"own"), true).unwrap();
        s.insert_revision(&g, &shared, true).unwrap();
        let orphaned = s.delete_function(&f).unwrap();
        assert_eq!(orphaned, vec![colony_core::revision::sha256_hex(b"own")]);
        assert_eq!(s.load_all().unwrap().len(), 1);
    }
}
