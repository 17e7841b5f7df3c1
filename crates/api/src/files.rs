//! Named files over HTTP for functions on the `files` I/O runtime: input
//! files from multipart/form-data (or task JSON), results as JSON.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use bytes::Bytes;
use colony_core::files::FileSet;
use colony_core::wire::{FileOutput, FilesResult};

use crate::error::ApiError;

/// The input files of a call: `multipart/form-data` with one part per file,
/// named by the file (the part's form field name), or an encoded file set
/// as is (what the client library sends).
pub(crate) async fn from_request(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        if FileSet::decode(&body).is_ok() {
            return Ok(body);
        }
        return Err(ApiError::bad_request(
            "this function takes named files (io=files): send multipart/form-data with one \
             part per file, named by the file (curl -F a.txt=@a.txt)",
        ));
    }
    let bad = |e: &dyn std::fmt::Display| ApiError::bad_request(format!("multipart body: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(|e| bad(&e))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut set = FileSet::new();
    while let Some(field) = form.next_field().await.map_err(|e| bad(&e))? {
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(ApiError::bad_request(
                "multipart body: a part has no name (name it by its file: name=\"a.txt\")",
            ));
        };
        let data = field.bytes().await.map_err(|e| bad(&e))?;
        set.insert(&name, data)
            .map_err(|e| ApiError::bad_request(format!("multipart body: {e}")))?;
    }
    Ok(set.encode())
}

/// A file set as the JSON answer.
pub(crate) fn listing(set: &FileSet) -> FilesResult {
    FilesResult {
        files: set
            .iter()
            .map(|(name, data)| FileOutput {
                name: name.to_owned(),
                size: data.len() as u64,
                base64: base64::engine::general_purpose::STANDARD.encode(data),
            })
            .collect(),
    }
}
