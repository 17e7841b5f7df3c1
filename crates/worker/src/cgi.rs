//! The `cgi` executor's HTTP side (CGI 1.1, RFC 3875, as Wagi does it):
//! a request becomes environment variables and stdin; the guest's stdout
//! is parsed back into a response. The guest itself runs as any WASI
//! command module (the `cgi` executor is the `wasm` executor under another
//! name; `/http/...` is what treats its stdout as a CGI response).

use bytes::Bytes;

/// Request headers never passed to a guest: credentials, and what CGI
/// carries in its own variables.
const WITHHELD: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "content-type",
    "content-length",
];

/// Most header lines a CGI response may have.
const MAX_HEADERS: usize = 100;
/// Largest header block of a CGI response (as for requests).
const MAX_HEADER_BYTES: usize = 32 << 10;

/// A piece of the guest's output quoted in an error, cut short.
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// One HTTP request, as a CGI guest sees it.
#[derive(Debug, Clone, Default)]
pub struct CgiRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The function's mount point, e.g. `/http/hello`.
    pub script_name: String,
    /// The rest of the path, `""` or starting with `/`.
    pub path_info: String,
    /// The query string, without `?`.
    pub query: String,
    /// The request's path and query as received (still percent-encoded),
    /// `REQUEST_URI`; empty when unknown.
    pub request_uri: String,
    /// Request headers (names as received).
    pub headers: Vec<(String, String)>,
    /// The host the request was addressed to, and its port.
    pub server_name: String,
    /// The port, as a string.
    pub server_port: String,
    /// The body (the guest's stdin).
    pub body: Bytes,
}

impl CgiRequest {
    /// The CGI meta-variables of this request.
    pub fn env(&self) -> Vec<(String, String)> {
        let header = |name: &str| {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut env = vec![
            ("GATEWAY_INTERFACE".to_owned(), "CGI/1.1".to_owned()),
            ("SERVER_PROTOCOL".to_owned(), "HTTP/1.1".to_owned()),
            (
                "SERVER_SOFTWARE".to_owned(),
                format!("colony/{}", env!("CARGO_PKG_VERSION")),
            ),
            ("SERVER_NAME".to_owned(), self.server_name.clone()),
            ("SERVER_PORT".to_owned(), self.server_port.clone()),
            ("REQUEST_METHOD".to_owned(), self.method.clone()),
            ("SCRIPT_NAME".to_owned(), self.script_name.clone()),
            ("PATH_INFO".to_owned(), self.path_info.clone()),
            ("QUERY_STRING".to_owned(), self.query.clone()),
            ("REQUEST_URI".to_owned(), self.request_uri.clone()),
            (
                "CONTENT_LENGTH".to_owned(),
                if self.body.is_empty() {
                    String::new()
                } else {
                    self.body.len().to_string()
                },
            ),
            (
                "CONTENT_TYPE".to_owned(),
                header("content-type").unwrap_or_default(),
            ),
        ];
        for (k, v) in &self.headers {
            let lower = k.to_ascii_lowercase();
            // `X_A` would pass for `X-A` (and `Content_Type` for a CGI
            // variable); `Proxy` would become HTTP_PROXY ("httpoxy").
            if WITHHELD.contains(&lower.as_str()) || lower.contains('_') || lower == "proxy" {
                continue;
            }
            let name = format!("HTTP_{}", lower.to_ascii_uppercase().replace('-', "_"));
            let sep = if lower == "cookie" { "; " } else { ", " };
            // A repeated header: joined, as CGI has one variable per name.
            match env.iter_mut().find(|(n, _)| *n == name) {
                Some((_, existing)) => {
                    existing.push_str(sep);
                    existing.push_str(v);
                }
                None => env.push((name, v.clone())),
            }
        }
        env
    }
}

/// A guest's CGI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiResponse {
    /// The HTTP status.
    pub status: u16,
    /// Headers to send (without `Status`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// Parses a guest's stdout as a CGI response; `Err` says what is wrong.
pub fn parse_response(out: Bytes) -> Result<CgiResponse, String> {
    let mut headers = Vec::new();
    let mut status = None;
    let mut at = 0;
    loop {
        let Some(end) = out[at..].iter().position(|&b| b == b'\n') else {
            return Err(if headers.is_empty() && at == 0 {
                "no header block: a CGI response starts with header lines and a blank line"
                    .to_owned()
            } else {
                "the header block does not end with a blank line".to_owned()
            });
        };
        let mut line = &out[at..at + end];
        at += end + 1;
        if at > MAX_HEADER_BYTES {
            return Err(format!(
                "the header block is over {} KiB",
                MAX_HEADER_BYTES >> 10
            ));
        }
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(format!("more than {MAX_HEADERS} header lines"));
        }
        let line =
            std::str::from_utf8(line).map_err(|_| "a header line is not UTF-8".to_owned())?;
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("header line {} has no colon", quote(line)));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("{} is not a header name", quote(name)));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!("header {name} has a control character"));
        }
        if name.eq_ignore_ascii_case("status") {
            let digits = value.split_whitespace().next().unwrap_or("");
            let code = Some(digits)
                .filter(|d| d.len() == 3)
                .and_then(|d| d.parse::<u16>().ok())
                // 1xx would switch protocols or leave the client waiting.
                .filter(|c| (200..=599).contains(c))
                .ok_or_else(|| {
                    format!(
                        "Status {} does not start with a code from 200 to 599",
                        quote(value)
                    )
                })?;
            if status.replace(code).is_some() {
                return Err("more than one Status line".to_owned());
            }
        } else {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if status.is_none() && !has("content-type") && !has("location") {
        return Err("no Content-Type, Location or Status header".to_owned());
    }
    let status = status.unwrap_or(if has("location") { 302 } else { 200 });
    Ok(CgiResponse {
        status,
        headers,
        body: out.slice(at..),
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CgiResponse, String> {
        parse_response(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn responses_parse() {
        let r = parse("Content-Type: text/plain\n\nhello").unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        assert_eq!(
            r.headers,
            vec![("Content-Type".into(), "text/plain".into())]
        );
        let r =
            parse("Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-A: b\r\n\r\n").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.headers.len(), 2);
        assert!(r.body.is_empty());
        let r = parse("Location: /there\n\n").unwrap();
        assert_eq!(r.status, 302);
        let r = parse("Status: 204\n\n").unwrap();
        assert_eq!(r.status, 204);
    }

    #[test]
    fn malformed_responses_say_why() {
        for (out, why) in [
            ("", "no header block"),
            ("just text", "no header block"),
            (
                "Content-Type: text/plain\nno end",
                "does not end with a blank line",
            ),
            ("Bad Header\n\n", "has no colon"),
            ("X-Only: 1\n\nbody", "no Content-Type, Location or Status"),
            ("Status: abc\n\n", "code from 200 to 599"),
            ("Status: 20\n\n", "code from 200 to 599"),
            (
                "Status: 101 Switching Protocols\nUpgrade: websocket\n\n",
                "code from 200 to 599",
            ),
            ("Status: 200\nStatus: 201\n\n", "more than one Status"),
            ("Bad Name: x\n\n", "is not a header name"),
        ] {
            let err = parse(out).unwrap_err();
            assert!(err.contains(why), "{out:?}: {err}");
        }
    }

    #[test]
    fn the_environment_follows_cgi() {
        let req = CgiRequest {
            method: "POST".into(),
            script_name: "/http/hello".into(),
            path_info: "/a/b".into(),
            query: "x=1".into(),
            request_uri: "/http/hello/a/b?x=1".into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Custom".into(), "v".into()),
                ("x-custom".into(), "w".into()),
                ("Authorization".into(), "Bearer secret".into()),
                ("Cookie".into(), "a=1".into()),
                ("Cookie".into(), "b=2".into()),
                ("Proxy".into(), "http://evil".into()),
                ("X_Forwarded_For".into(), "6.6.6.6".into()),
                ("X-Forwarded-For".into(), "1.1.1.1".into()),
                ("Content_Type".into(), "evil".into()),
            ],
            server_name: "localhost".into(),
            server_port: "8080".into(),
            body: Bytes::from_static(b"{}"),
        };
        let env = req.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("PATH_INFO"), Some("/a/b"));
        assert_eq!(get("QUERY_STRING"), Some("x=1"));
        assert_eq!(get("CONTENT_LENGTH"), Some("2"));
        assert_eq!(get("CONTENT_TYPE"), Some("application/json"));
        assert_eq!(get("HTTP_X_CUSTOM"), Some("v, w"));
        assert_eq!(get("HTTP_COOKIE"), Some("a=1; b=2"));
        assert!(get("HTTP_PROXY").is_none());
        assert_eq!(get("HTTP_X_FORWARDED_FOR"), Some("1.1.1.1"));
        assert_eq!(get("GATEWAY_INTERFACE"), Some("CGI/1.1"));
        assert!(get("HTTP_AUTHORIZATION").is_none());
        assert!(get("HTTP_CONTENT_TYPE").is_none());
        assert_eq!(get("CONTENT_TYPE"), Some("application/json"));
    }
}
