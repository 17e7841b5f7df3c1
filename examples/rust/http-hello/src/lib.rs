//! Hello world as a wasi:http proxy component.
//!
//! - `GET /` (any path): `Hello, world!` and the path, as text.
//! - `POST` (any path): the body back, with `content-type` kept.
//! - `/trap`: panics (the guest traps). `/spin`: loops forever.
//! - `/error`: answers with an error code instead of a response.
//! - `/silent`: returns without answering.
//!
//! Every response has `x-hello: component`.

use std::io::{Read as _, Write as _};

use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/trap" => panic!("asked to trap"),
            "/error" => {
                ResponseOutparam::set(
                    response_out,
                    Err(ErrorCode::InternalError(Some("asked to fail".into()))),
                );
                return;
            }
            "/silent" => return,
            "/spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            _ => {}
        }
        let headers = Fields::new();
        headers
            .append("x-hello", b"component")
            .expect("x-hello is a valid header");
        let body = match request.method() {
            Method::Post | Method::Put => {
                for value in request.headers().get("content-type") {
                    headers
                        .append("content-type", &value)
                        .expect("content-type came in valid");
                }
                read_body(&request)
            }
            _ => {
                headers
                    .append("content-type", b"text/plain; charset=utf-8")
                    .expect("a valid content-type");
                format!("Hello, world! You asked for {path}\n").into_bytes()
            }
        };
        let response = OutgoingResponse::new(headers);
        let out = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = out.write().expect("the stream is taken once");
        stream.write_all(&body).expect("the host takes the body");
        stream.flush().expect("the host takes the body");
        drop(stream);
        OutgoingBody::finish(out, None).expect("the body ends");
    }
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let body = request.consume().expect("the body is consumed once");
    let mut bytes = Vec::new();
    body.stream()
        .expect("the stream is taken once")
        .read_to_end(&mut bytes)
        .expect("the host gives the body");
    bytes
}
