//! The guest's stdout (capped) and stderr (a bounded tail).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The most a guest may write in one call.
const WRITE_PERMIT: usize = 64 << 10;

/// Trap payload when a guest writes past its output cap.
#[derive(Debug, thiserror::Error)]
#[error("output limit of {0} bytes exceeded")]
pub(crate) struct OutputLimitExceeded(pub(crate) usize);

#[derive(Debug, Default)]
struct Shared {
    buf: Mutex<BytesMut>,
    overflowed: AtomicBool,
}

/// Collects stdout up to a cap. The first write that would pass the cap
/// traps the guest (rather than returning an error the guest could ignore),
/// so the worker never holds more than the cap.
#[derive(Clone, Debug)]
pub(crate) struct CappedOutput {
    cap: usize,
    shared: Arc<Shared>,
}

impl CappedOutput {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            shared: Arc::default(),
        }
    }

    /// Whether the guest tried to write past the cap.
    pub(crate) fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Relaxed)
    }

    /// Takes what was written.
    pub(crate) fn take(&self) -> Bytes {
        std::mem::take(&mut *self.shared.buf.lock().expect("stdout lock")).freeze()
    }

    fn push(&self, bytes: &[u8]) -> Result<(), OutputLimitExceeded> {
        let mut buf = self.shared.buf.lock().expect("stdout lock");
        if bytes.len() > self.cap - buf.len() {
            self.shared.overflowed.store(true, Ordering::Relaxed);
            return Err(OutputLimitExceeded(self.cap));
        }
        buf.extend_from_slice(bytes);
        Ok(())
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.push(buf).map(|()| buf.len()).map_err(io::Error::other))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Keeps the last `cap` bytes written (stderr), dropping older ones, so a
/// guest printing gigabytes to stderr costs the worker at most `2 * cap`.
#[derive(Clone, Debug)]
pub(crate) struct Tail {
    cap: usize,
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            buf: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock().expect("stderr lock");
        if bytes.len() >= self.cap {
            buf.clear();
            buf.extend_from_slice(&bytes[bytes.len() - self.cap..]);
            return;
        }
        buf.extend_from_slice(bytes);
        if buf.len() > 2 * self.cap {
            let cut = buf.len() - self.cap;
            buf.drain(..cut);
        }
    }

    /// The last `cap` bytes, lossily decoded as UTF-8.
    pub(crate) fn text(&self) -> String {
        let buf = self.buf.lock().expect("stderr lock");
        let start = buf.len().saturating_sub(self.cap);
        String::from_utf8_lossy(&buf[start..]).into_owned()
    }
}

impl IsTerminal for Tail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Tail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Pollable for Tail {
    async fn ready(&mut self) {}
}

impl OutputStream for Tail {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for Tail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_output_refuses_the_write_that_passes_the_cap() {
        let out = CappedOutput::new(10);
        out.push(b"12345").unwrap();
        out.push(b"67890").unwrap();
        assert!(out.push(b"x").is_err());
        assert!(out.overflowed());
        assert_eq!(&out.take()[..], b"1234567890");
    }

    #[test]
    fn tail_keeps_the_end() {
        let t = Tail::new(4);
        for chunk in [&b"ab"[..], b"cd", b"ef", b"gh", b"ij"] {
            t.push(chunk);
        }
        assert_eq!(t.text(), "ghij");
        t.push(b"0123456789");
        assert_eq!(t.text(), "6789");
    }
}
