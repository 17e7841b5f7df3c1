//! Bearer tokens with scopes.
//!
//! With no token configured the API is open (the worker says so at
//! start). With tokens, every route but `GET /status` and
//! `GET /openapi.json` needs `Authorization: Bearer <token>`: a missing
//! or unknown token is 401, a token whose scope does not cover the route
//! is 403. `invoke` tokens run functions, read functions, and submit,
//! read and cancel their own tasks; `admin` tokens do everything.
//! Tokens are compared by their sha256 digests in constant time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, Method, StatusCode, header};
use colony_core::ErrorCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Shortest token accepted in configuration.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Run functions, read functions, submit and follow its own tasks.
    Invoke,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "invoke" => Ok(Scope::Invoke),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("{other:?} is not a scope; scopes: admin, invoke")),
        }
    }
}

#[derive(Debug)]
struct Token {
    name: Arc<str>,
    scope: Scope,
    digest: [u8; 32],
    /// Requests of this token in flight now.
    inflight: Arc<AtomicUsize>,
}

/// The configured tokens; empty means open.
#[derive(Debug, Default)]
pub struct Auth {
    tokens: Vec<Token>,
    /// Most requests in flight per token; 0 for no limit.
    max_inflight: usize,
}

/// A request counted against its token's in-flight limit; released on drop.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name; `None` when the API is open.
    pub name: Option<Arc<str>>,
    /// Whether the caller may act on everything (an admin token, or open).
    pub admin: bool,
    inflight: Option<Arc<AtomicUsize>>,
}

impl Caller {
    /// The owner recorded on tasks this caller submits.
    pub fn owner(&self) -> Option<String> {
        self.name.as_deref().map(str::to_owned)
    }

    /// Whether the caller may see a task with this owner.
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        self.admin || (self.name.is_some() && owner == self.name.as_deref())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// An open API.
    pub fn open() -> Self {
        Self::default()
    }

    /// Tokens as (name, secret, scope). Names must be unique and secrets
    /// at least [`MIN_TOKEN_LEN`] characters.
    pub fn new(tokens: impl IntoIterator<Item = (String, String, Scope)>) -> Result<Self, String> {
        let mut out: Vec<Token> = Vec::new();
        for (name, secret, scope) in tokens {
            if secret.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "token {name:?} is shorter than {MIN_TOKEN_LEN} characters"
                ));
            }
            if out.iter().any(|t| *t.name == *name) {
                return Err(format!("two tokens are named {name:?}"));
            }
            out.push(Token {
                name: name.into(),
                scope,
                digest: digest(&secret),
                inflight: Arc::default(),
            });
        }
        Ok(Self {
            tokens: out,
            max_inflight: 0,
        })
    }

    /// Limits each token to `n` requests in flight (0: no limit); more
    /// are refused with 429 `too_many_requests`.
    pub fn with_max_inflight(mut self, n: usize) -> Self {
        self.max_inflight = n;
        self
    }

    /// Counts a request against its caller's token, or refuses it.
    pub(crate) fn admit(&self, caller: &Caller) -> Result<Option<InFlight>, ApiError> {
        let (Some(counter), n) = (&caller.inflight, self.max_inflight) else {
            return Ok(None);
        };
        if n == 0 {
            return Ok(None);
        }
        if counter.fetch_add(1, Ordering::AcqRel) >= n {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                format!("this token has {n} requests in flight, its limit; retry when one ends"),
            )
            .with_retry_after(1));
        }
        Ok(Some(InFlight(counter.clone())))
    }

    /// Whether no token is configured.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many tokens of each scope: (admin, invoke).
    pub fn counts(&self) -> (usize, usize) {
        let admin = self
            .tokens
            .iter()
            .filter(|t| t.scope == Scope::Admin)
            .count();
        (admin, self.tokens.len() - admin)
    }

    /// Authenticates a request to a route needing `need` (`None`: public).
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        need: Option<Scope>,
    ) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller {
                name: None,
                admin: true,
                inflight: None,
            });
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })
            .map(str::trim);
        let found = presented.and_then(|p| {
            let d = digest(p);
            // Compare against every token, whatever matches, so timing
            // says nothing about which one (or whether any) did.
            let mut hit = None;
            for t in &self.tokens {
                if bool::from(t.digest.ct_eq(&d)) {
                    hit = Some(t);
                }
            }
            hit
        });
        let Some(token) = found else {
            return match need {
                None => Ok(Caller {
                    name: None,
                    admin: false,
                    inflight: None,
                }),
                Some(_) => Err(unauthorized(presented.is_some())),
            };
        };
        let caller = Caller {
            name: Some(token.name.clone()),
            admin: token.scope == Scope::Admin,
            inflight: Some(token.inflight.clone()),
        };
        match need {
            Some(scope) if token.scope < scope => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!(
                    "token {:?} has scope {:?}; this needs {:?}",
                    &*token.name, token.scope, scope
                )
                .to_lowercase(),
            )),
            _ => Ok(caller),
        }
    }
}

fn unauthorized(presented: bool) -> ApiError {
    let message = if presented {
        "the bearer token is not valid here"
    } else {
        "this worker needs a token: send `Authorization: Bearer <token>`"
    };
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        .with_www_authenticate()
}

/// The scope a route needs: `None` for public routes.
pub(crate) fn required(method: &Method, route: Option<&str>) -> Option<Scope> {
    let route = route?;
    // HEAD is GET without a body.
    let method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    match (method, route) {
        ("GET", "/status") | ("GET", "/openapi.json") => None,
        ("POST", "/run/{target}") => Some(Scope::Invoke),
        (_, "/http/{target}") | (_, "/http/{target}/") | (_, "/http/{target}/{*path}") => {
            Some(Scope::Invoke)
        }
        ("GET", "/functions") | ("GET", "/functions/{name}") | ("GET", "/workers") => {
            Some(Scope::Invoke)
        }
        ("POST", "/tasks") | ("GET", "/tasks") => Some(Scope::Invoke),
        ("GET", "/tasks/{id}")
        | ("GET", "/tasks/{id}/result")
        | ("GET", "/tasks/{id}/files/{file}")
        | ("DELETE", "/tasks/{id}")
        | ("GET", "/directives/{id}/events") => Some(Scope::Invoke),
        // Deploy, delete, default switch, metrics, and anything new.
        _ => Some(Scope::Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn tokens_are_checked_by_scope() {
        let auth = Auth::new([
            (
                "ops".to_owned(),
                "admin-secret-0123456789".to_owned(),
                Scope::Admin,
            ),
            (
                "app".to_owned(),
                "invoke-secret-0123456789".to_owned(),
                Scope::Invoke,
            ),
        ])
        .unwrap();
        let code =
            |r: Result<Caller, ApiError>| r.map(|c| c.admin).map_err(|e| e.status().as_u16());
        assert_eq!(
            code(auth.check(&headers(None), Some(Scope::Invoke))),
            Err(401)
        );
        assert_eq!(
            code(auth.check(&headers(Some("nope-nope-nope-nope")), Some(Scope::Invoke))),
            Err(401)
        );
        assert_eq!(
            code(auth.check(
                &headers(Some("invoke-secret-0123456789")),
                Some(Scope::Admin)
            )),
            Err(403)
        );
        assert_eq!(
            code(auth.check(
                &headers(Some("invoke-secret-0123456789")),
                Some(Scope::Invoke)
            )),
            Ok(false)
        );
        assert_eq!(
            code(auth.check(
                &headers(Some("admin-secret-0123456789")),
                Some(Scope::Admin)
            )),
            Ok(true)
        );
        assert_eq!(code(auth.check(&headers(None), None)), Ok(false));
        let open = Auth::open();
        assert_eq!(
            code(open.check(&headers(None), Some(Scope::Admin))),
            Ok(true)
        );
    }

    #[test]
    fn configuration_mistakes_are_refused() {
        assert!(Auth::new([("a".into(), "short".into(), Scope::Admin)]).is_err());
        let dup = [
            ("a".into(), "x".repeat(20), Scope::Admin),
            ("a".into(), "y".repeat(20), Scope::Invoke),
        ];
        assert!(Auth::new(dup).is_err());
        assert_eq!("admin".parse::<Scope>(), Ok(Scope::Admin));
        assert!("root".parse::<Scope>().is_err());
    }
}
