//! The function registry: an in-memory index over the store.
//!
//! Reads (every invocation) take a read lock for a hash lookup and an `Arc`
//! clone, never across an await and never touching SQLite. Writes (deploy,
//! default switch, delete) are serialized by an async mutex, persisted
//! first, then published by replacing the function's entry.

use std::collections::HashMap;
use std::sync::Arc;

use colony_core::wire::{FunctionInfo, RevisionInfo};
use colony_core::{FunctionName, FunctionRef, RevisionId};
use parking_lot::RwLock;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::executor::Runnable;
use crate::store::{FunctionRow, RevisionRow};

/// A revision in the index, with its prepared form once built.
#[derive(Debug)]
pub(crate) struct RevisionEntry {
    pub(crate) function: FunctionName,
    pub(crate) row: RevisionRow,
    pub(crate) prepared: OnceCell<Arc<dyn Runnable>>,
}

impl RevisionEntry {
    /// `function@id`: this revision, whatever the default becomes.
    pub(crate) fn pinned(&self) -> colony_core::FunctionRef {
        colony_core::FunctionRef {
            name: self.function.clone(),
            rev: Some(self.row.id.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FunctionEntry {
    pub(crate) name: FunctionName,
    pub(crate) default_rev: RevisionId,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
    pub(crate) revisions: Vec<Arc<RevisionEntry>>,
}

impl FunctionEntry {
    pub(crate) fn from_row(row: FunctionRow) -> Self {
        let name = row.name;
        Self {
            revisions: row
                .revisions
                .into_iter()
                .map(|r| {
                    Arc::new(RevisionEntry {
                        function: name.clone(),
                        row: r,
                        prepared: OnceCell::new(),
                    })
                })
                .collect(),
            name,
            default_rev: row.default_rev,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        }
    }

    pub(crate) fn info(&self) -> FunctionInfo {
        FunctionInfo {
            name: self.name.clone(),
            default_revision: self.default_rev.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            revisions: self
                .revisions
                .iter()
                .map(|r| RevisionInfo {
                    id: r.row.id.clone(),
                    number: r.row.number,
                    default: r.row.id == self.default_rev,
                    code_sha256: r.row.code_sha256.clone(),
                    code_size: r.row.code_size,
                    manifest: r.row.manifest.clone(),
                    created_ms: r.row.created_ms,
                })
                .collect(),
        }
    }

    /// The revision a reference names: the default, or the one whose id
    /// starts with the given prefix (which must match exactly one).
    pub(crate) fn resolve(&self, rev: Option<&str>) -> Result<Arc<RevisionEntry>> {
        let want = rev.unwrap_or(self.default_rev.as_str());
        let mut found = self
            .revisions
            .iter()
            .filter(|r| r.row.id.as_str().starts_with(want));
        match (found.next(), found.next()) {
            (Some(r), None) => Ok(r.clone()),
            (None, _) => Err(Error::RevisionNotFound {
                name: self.name.to_string(),
                rev: want.to_owned(),
            }),
            (Some(_), Some(_)) => Err(Error::AmbiguousRevision {
                name: self.name.to_string(),
                rev: want.to_owned(),
                matches: self
                    .revisions
                    .iter()
                    .filter(|r| r.row.id.as_str().starts_with(want))
                    .count(),
            }),
        }
    }
}

/// The index itself.
#[derive(Debug, Default)]
pub(crate) struct Index {
    functions: RwLock<HashMap<FunctionName, Arc<FunctionEntry>>>,
}

impl Index {
    pub(crate) fn load(rows: Vec<FunctionRow>) -> Self {
        let map = rows
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(FunctionEntry::from_row(r))))
            .collect();
        Self {
            functions: RwLock::new(map),
        }
    }

    pub(crate) fn get(&self, name: &FunctionName) -> Option<Arc<FunctionEntry>> {
        self.functions.read().get(name).cloned()
    }

    pub(crate) fn function(&self, name: &FunctionName) -> Result<Arc<FunctionEntry>> {
        self.get(name).ok_or_else(|| Error::FunctionNotFound {
            name: name.to_string(),
        })
    }

    pub(crate) fn resolve(&self, r: &FunctionRef) -> Result<Arc<RevisionEntry>> {
        self.function(&r.name)?.resolve(r.rev.as_deref())
    }

    pub(crate) fn put(&self, entry: FunctionEntry) {
        self.functions
            .write()
            .insert(entry.name.clone(), Arc::new(entry));
    }

    pub(crate) fn remove(&self, name: &FunctionName) -> Option<Arc<FunctionEntry>> {
        self.functions.write().remove(name)
    }

    pub(crate) fn all(&self) -> Vec<Arc<FunctionEntry>> {
        let mut v: Vec<_> = self.functions.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub(crate) fn counts(&self) -> (usize, usize) {
        let map = self.functions.read();
        (map.len(), map.values().map(|f| f.revisions.len()).sum())
    }
}
