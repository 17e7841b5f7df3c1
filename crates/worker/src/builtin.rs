//! The `builtin` executor: native Rust functions compiled into the worker.
//!
//! A builtin revision's "code" is the builtin's name (`echo`, `sha256`,
//! `wordcount`), so `colony deploy hash --executor builtin sha256` deploys
//! the sha256 builtin as function `hash`. Builtins obey the output cap;
//! they are fast and bounded, so timeouts and memory caps do not apply.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use colony_core::{Failure, FunctionName, Manifest};
use sha2::{Digest, Sha256};

use crate::executor::{Call, Executor, PrepareError, Runnable};

/// A builtin function: input bytes to output bytes, or an error message
/// (reported as a non-zero exit with the message as stderr).
pub type BuiltinFn = fn(Bytes) -> Result<Bytes, String>;

/// The builtins every worker ships.
pub const BUILTINS: &[(&str, BuiltinFn, &str)] = &[
    ("echo", echo, "returns its input unchanged"),
    (
        "sha256",
        sha256,
        "returns the lower-case hex sha256 of its input",
    ),
    (
        "wordcount",
        wordcount,
        "returns {\"lines\",\"words\",\"bytes\"} of its input as JSON",
    ),
    (
        "square",
        square,
        "returns the square of a JSON number (integers exact, overflow an error)",
    ),
    (
        "add",
        add,
        "returns the sum of a JSON array of two numbers, [a, b] (integers exact)",
    ),
];

/// A JSON number: exact when an integer.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(v: &serde_json::Value) -> Result<Self, String> {
        match v {
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Num::Int(i)),
                None => n
                    .as_f64()
                    .map(Num::Float)
                    .ok_or_else(|| format!("{n} is out of range")),
            },
            other => Err(format!("expected a JSON number, got {other}")),
        }
    }

    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Combines two numbers: exactly when both are integers.
    fn with(
        self,
        other: Num,
        int: fn(i64, i64) -> Option<i64>,
        float: fn(f64, f64) -> f64,
        what: &str,
    ) -> Result<Bytes, String> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => int(a, b)
                .map(|r| Bytes::from(r.to_string()))
                .ok_or_else(|| format!("{what} of {a} and {b} overflows a 64-bit integer")),
            (a, b) => {
                let r = float(a.f64(), b.f64());
                serde_json::Number::from_f64(r)
                    .map(|n| Bytes::from(n.to_string()))
                    .ok_or_else(|| format!("{what} is not a finite number"))
            }
        }
    }
}

fn json(input: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(input).map_err(|e| format!("the input is not JSON: {e}"))
}

fn square(input: Bytes) -> Result<Bytes, String> {
    let n = Num::of(&json(&input)?)?;
    n.with(n, i64::checked_mul, |a, b| a * b, "the square")
}

fn add(input: Bytes) -> Result<Bytes, String> {
    match json(&input)? {
        serde_json::Value::Array(v) if v.len() == 2 => {
            Num::of(&v[0])?.with(Num::of(&v[1])?, i64::checked_add, |a, b| a + b, "the sum")
        }
        other => Err(format!("expected [a, b], got {other}")),
    }
}

fn echo(input: Bytes) -> Result<Bytes, String> {
    Ok(input)
}

fn sha256(input: Bytes) -> Result<Bytes, String> {
    Ok(Bytes::from(hex::encode(Sha256::digest(&input))))
}

fn wordcount(input: Bytes) -> Result<Bytes, String> {
    let lines = input.iter().filter(|&&b| b == b'\n').count();
    let words = input
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .count();
    Ok(Bytes::from(format!(
        r#"{{"lines":{lines},"words":{words},"bytes":{}}}"#,
        input.len()
    )))
}

/// The `builtin` executor, with a table of functions that can be extended
/// with [`BuiltinExecutor::with`].
#[derive(Debug, Clone)]
pub struct BuiltinExecutor {
    functions: BTreeMap<String, BuiltinFn>,
}

impl Default for BuiltinExecutor {
    fn default() -> Self {
        Self {
            functions: BUILTINS
                .iter()
                .map(|(n, f, _)| ((*n).to_owned(), *f))
                .collect(),
        }
    }
}

impl BuiltinExecutor {
    /// Adds (or replaces) a builtin.
    pub fn with(mut self, name: impl Into<String>, f: BuiltinFn) -> Self {
        self.functions.insert(name.into(), f);
        self
    }
}

impl Executor for BuiltinExecutor {
    fn prepare(
        &self,
        _name: &FunctionName,
        code: &[u8],
        manifest: &Manifest,
    ) -> Result<Arc<dyn Runnable>, PrepareError> {
        let builtin = std::str::from_utf8(code).unwrap_or("").trim();
        let f = self
            .functions
            .get(builtin)
            .ok_or_else(|| PrepareError::InvalidCode {
                reason: format!(
                    "no builtin named {builtin:?}; available: {}",
                    self.functions
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        Ok(Arc::new(Builtin {
            f: *f,
            output_limit: manifest.limits.output_bytes,
        }))
    }
}

#[derive(Debug)]
struct Builtin {
    f: BuiltinFn,
    output_limit: u64,
}

#[async_trait::async_trait]
impl Runnable for Builtin {
    async fn run(&self, call: Call<'_>) -> Result<Bytes, Failure> {
        if call.cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Failure::Cancelled);
        }
        let out = (self.f)(call.input).map_err(|message| Failure::Exit {
            exit_code: 1,
            stderr_tail: message,
        })?;
        if out.len() as u64 > self.output_limit {
            return Err(Failure::OutputLimit {
                limit_bytes: self.output_limit,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_compute_what_they_say() {
        assert_eq!(echo(Bytes::from_static(b"hi")).unwrap(), "hi");
        assert_eq!(
            sha256(Bytes::from_static(b"abc")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            wordcount(Bytes::from_static(b"one two\nthree\n")).unwrap(),
            r#"{"lines":2,"words":3,"bytes":14}"#
        );
        assert_eq!(square(Bytes::from_static(b"-12")).unwrap(), "144");
        assert_eq!(square(Bytes::from_static(b"1.5")).unwrap(), "2.25");
        assert!(
            square(Bytes::from_static(b"3037000500"))
                .unwrap_err()
                .contains("overflows")
        );
        assert!(
            square(Bytes::from_static(b"\"x\""))
                .unwrap_err()
                .contains("JSON number")
        );
        assert!(
            square(Bytes::from_static(b"nope"))
                .unwrap_err()
                .contains("not JSON")
        );
        assert_eq!(add(Bytes::from_static(b"[2, 40]")).unwrap(), "42");
        assert_eq!(add(Bytes::from_static(b"[1, 0.5]")).unwrap(), "1.5");
        assert!(
            add(Bytes::from_static(b"[1]"))
                .unwrap_err()
                .contains("[a, b]")
        );
        assert!(
            add(Bytes::from_static(b"[9223372036854775807, 1]"))
                .unwrap_err()
                .contains("overflows")
        );
    }

    #[tokio::test]
    async fn unknown_builtin_is_invalid_code_and_output_is_capped() {
        let exec = BuiltinExecutor::default();
        let name = FunctionName::new("f").unwrap();
        let err = exec
            .prepare(&name, b"nope", &Manifest::default())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("add, echo, sha256, square, wordcount"),
            "{err}"
        );
        let mut m = Manifest::default();
        m.limits.output_bytes = 3;
        let r = exec.prepare(&name, b"echo", &m).unwrap();
        let ok = r
            .run(Call {
                input: Bytes::from_static(b"abc"),
                cancel: None,
                timeout_ms: None,
                env: &[],
            })
            .await
            .unwrap();
        assert_eq!(ok, "abc");
        let err = r
            .run(Call {
                input: Bytes::from_static(b"abcd"),
                cancel: None,
                timeout_ms: None,
                env: &[],
            })
            .await
            .unwrap_err();
        assert_eq!(err, Failure::OutputLimit { limit_bytes: 3 });
    }
}
