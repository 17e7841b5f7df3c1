//! The parsers of outside input never panic, accept exactly what their
//! rules say, and round-trip what they accept.

use std::time::Duration;

use colony_core::manifest::{MAX_ARGS, MAX_ENV_ARGS_BYTES, MAX_ENV_VARS};
use colony_core::name::{MAX_NAME_LEN, NAME_PATTERN, NameError, REF_PATTERN};
use colony_core::task::{MAX_ATTEMPTS_CEILING, TASK_ID_PATTERN};
use colony_core::units::{format_size, parse_duration, parse_size};
use colony_core::{FunctionName, FunctionRef, Manifest, RetryOn, TaskId};
use proptest::prelude::*;
use proptest::string::string_regex;
use serde_json::{Value, json};

/// Strings matching an OpenAPI pattern (`^...$`) of colony-core.
fn matching(pattern: &str) -> impl Strategy<Value = String> + use<> {
    let inner = pattern.trim_start_matches('^').trim_end_matches('$');
    string_regex(inner).expect("a pattern proptest can generate from")
}

/// Text that is mostly near the rules: short strings of the characters
/// the rules care about, and anything at all.
fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        "[a-zA-Z0-9_@./ =-]{0,80}",
        "[0-9a-fA-F@]{0,80}",
        any::<String>(),
        "\\PC{0,300}",
    ]
}

/// The name rule, written out again: `[a-z0-9][a-z0-9_-]{0,62}`.
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=MAX_NAME_LEN).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn is_rev(s: &str) -> bool {
    (8..=64).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_hexdigit())
}

proptest! {
    #[test]
    fn function_names_are_exactly_the_rule(s in text()) {
        let got = FunctionName::new(s.clone());
        prop_assert_eq!(got.is_ok(), is_name(&s), "{:?}", s);
        match got {
            Ok(name) => prop_assert_eq!(name.as_str(), s.as_str()),
            Err(NameError::Empty) => prop_assert!(s.is_empty()),
            Err(NameError::TooLong { len }) => prop_assert!(len == s.len() && len > MAX_NAME_LEN),
            Err(NameError::Invalid { name }) => prop_assert_eq!(name, s.clone()),
            Err(e) => prop_assert!(false, "{:?}: {e}", s),
        }
        // Deserializing applies the same rule.
        let de = serde_json::from_value::<FunctionName>(json!(s));
        prop_assert_eq!(de.is_ok(), is_name(&s));
    }

    #[test]
    fn the_name_pattern_only_makes_names(s in matching(NAME_PATTERN)) {
        prop_assert!(FunctionName::new(s.clone()).is_ok(), "{:?}", s);
    }

    #[test]
    fn references_are_a_name_and_an_optional_revision(s in prop_oneof![
        text(),
        (matching(NAME_PATTERN), text()).prop_map(|(n, r)| format!("{n}@{r}")),
    ]) {
        let want = match s.split_once('@') {
            None => is_name(&s),
            Some((name, rev)) => is_name(name) && is_rev(rev),
        };
        let got = FunctionRef::parse(&s);
        prop_assert_eq!(got.is_ok(), want, "{:?}", s);
        if let Ok(r) = got {
            // Revisions are lower-cased; the reference prints back as itself.
            let rev = s.split_once('@').map(|(_, v)| v.to_ascii_lowercase());
            prop_assert_eq!(&r.rev, &rev);
            prop_assert_eq!(FunctionRef::parse(&r.to_string()), Ok(r.clone()));
            prop_assert_eq!(r.to_string().eq_ignore_ascii_case(&s), true);
        }
    }

    #[test]
    fn the_reference_pattern_only_makes_references(s in matching(REF_PATTERN)) {
        prop_assert!(FunctionRef::parse(&s).is_ok(), "{:?}", s);
    }

    #[test]
    fn task_ids_are_26_crockford_characters(s in prop_oneof![
        text(),
        "[0-9a-zA-Z]{26}",
        matching(TASK_ID_PATTERN),
    ]) {
        const CROCKFORD: &str = "0123456789abcdefghjkmnpqrstvwxyz";
        let want = s.len() == 26
            && s.chars().all(|c| CROCKFORD.contains(c))
            && s.as_bytes()[0] <= b'7';
        let got = TaskId::parse(&s);
        prop_assert_eq!(got.is_ok(), want, "{:?}", s);
        if let Ok(id) = got {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
        prop_assert_eq!(serde_json::from_value::<TaskId>(json!(s)).is_ok(), want);
    }

    #[test]
    fn the_task_id_pattern_only_makes_ids(s in matching(TASK_ID_PATTERN)) {
        prop_assert!(TaskId::parse(&s).is_ok(), "{:?}", s);
    }

    #[test]
    fn durations_never_panic_and_round_trip(s in text(), ms in any::<u64>()) {
        let _ = parse_duration(&s);
        let d = Duration::from_millis(ms);
        let written = humantime::format_duration(d).to_string();
        prop_assert_eq!(parse_duration(&written), Ok(d), "{}", written);
    }

    #[test]
    fn sizes_never_panic_and_round_trip(
        s in text(),
        n in prop_oneof![any::<u64>(), (0u64..1 << 34), (0u64..1 << 24).prop_map(|k| k << 20)],
        unit in prop::sample::select(vec![
            ("", 1u64), ("B", 1), ("K", 1 << 10), ("KiB", 1 << 10), ("kib", 1 << 10),
            ("M", 1 << 20), ("MiB", 1 << 20), ("G", 1 << 30), ("GiB", 1 << 30),
            ("KB", 1_000), ("kB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000),
        ]),
        pad in prop::sample::select(vec!["", " ", "\t", "  "]),
    ) {
        let _ = parse_size(&s);
        prop_assert_eq!(parse_size(&format_size(n)), Ok(n), "{}", format_size(n));
        let written = format!("{pad}{n}{pad}{}{pad}", unit.0);
        match n.checked_mul(unit.1) {
            Some(bytes) => prop_assert_eq!(parse_size(&written), Ok(bytes), "{:?}", written),
            None => prop_assert!(parse_size(&written).is_err(), "{:?}", written),
        }
        // A sign, a fraction or an unknown unit is refused.
        for bad in [format!("-{n}"), format!("{n}.5MiB"), format!("{n}XB")] {
            prop_assert!(parse_size(&bad).is_err(), "{:?}", bad);
        }
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    colony_testsupport::strategies::any_json(text())
}

/// Manifest-shaped JSON: the real keys, with values of the right type or not.
fn manifest_json() -> impl Strategy<Value = Value> {
    let limits = prop::collection::btree_map(
        prop::sample::select(vec!["timeout_ms", "memory_bytes", "output_bytes", "extra"]),
        prop_oneof![
            3 => any::<u64>().prop_map(Value::from),
            3 => (0u64..200_000).prop_map(Value::from),
            1 => any_json()
        ],
        0..4,
    );
    let retry = prop::collection::btree_map(
        prop::sample::select(vec!["max_attempts", "on", "backoff_ms", "max_backoff_ms"]),
        prop_oneof![
            3 => (0u64..200).prop_map(Value::from),
            3 => prop::collection::vec(
                prop::sample::select(vec!["trap", "timeout", "exit", "worker_lost", "limit", "x"]),
                0..4
            )
            .prop_map(|v| json!(v)),
            1 => any_json(),
        ],
        0..4,
    );
    let fields = (
        prop_oneof![
            Just(json!("wasm")),
            Just(json!("builtin")),
            text().prop_map(Value::from)
        ],
        prop_oneof![4 => Just(json!("stdio")), 1 => any_json()],
        limits.prop_map(|m| json!(m)),
        prop::collection::btree_map(text(), text(), 0..4).prop_map(|m| json!(m)),
        prop::collection::vec(text(), 0..4).prop_map(|v| json!(v)),
        retry.prop_map(|m| json!(m)),
        prop_oneof![4 => any::<u32>().prop_map(Value::from), 1 => any_json()],
    );
    (fields, prop::collection::vec(any::<bool>(), 7)).prop_map(|(f, keep)| {
        let all = [
            ("executor", f.0),
            ("io", f.1),
            ("limits", f.2),
            ("env", f.3),
            ("args", f.4),
            ("retry", f.5),
            ("concurrency", f.6),
        ];
        let object = all
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|((key, v), _)| (key.to_owned(), v))
            .collect();
        Value::Object(object)
    })
}

/// The manifest rules, written out again.
fn follows_the_rules(m: &Manifest) -> bool {
    let e = &m.executor;
    let env_ok = m.env.len() <= MAX_ENV_VARS
        && m.env
            .iter()
            .all(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'));
    let args_ok = m.args.len() <= MAX_ARGS && m.args.iter().all(|a| !a.contains('\0'));
    let bytes: usize = m
        .env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>()
        + m.args.iter().map(|a| a.len() + 1).sum::<usize>();
    (1..=32).contains(&e.len())
        && e.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && m.limits.timeout_ms > 0
        && m.limits.memory_bytes >= 64 << 10
        && m.limits.output_bytes > 0
        && (1..=MAX_ATTEMPTS_CEILING).contains(&m.retry.max_attempts)
        && m.retry.backoff_ms <= m.retry.max_backoff_ms
        && env_ok
        && args_ok
        && bytes <= MAX_ENV_ARGS_BYTES
}

proptest! {
    #[test]
    fn manifest_json_parses_validates_and_round_trips(v in prop_oneof![4 => manifest_json(), 1 => any_json()]) {
        check_manifest_json(&v.to_string())?;
    }

    #[test]
    fn manifest_parser_survives_any_text(s in text()) {
        check_manifest_json(&s)?;
    }
}

fn check_manifest_json(text: &str) -> Result<(), TestCaseError> {
    let Ok(m) = serde_json::from_str::<Manifest>(text) else {
        return Ok(());
    };
    let valid = m.validate();
    prop_assert_eq!(valid.is_ok(), follows_the_rules(&m), "{:?}: {:?}", m, valid);
    // What parses prints back to the same manifest.
    let again: Manifest = serde_json::from_str(&m.canonical_json()).unwrap();
    prop_assert_eq!(&again, &m);
    prop_assert_eq!(again.canonical_json(), m.canonical_json());
    for r in &m.retry.on {
        prop_assert!(RetryOn::ALL.contains(r));
    }
    Ok(())
}
