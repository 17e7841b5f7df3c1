//! Errors of preparing modules.

/// Result of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the engine could not prepare or start a module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a valid WebAssembly module (or WAT text); the
    /// reason is wasmtime's. The caller should fix the upload.
    #[error("invalid WebAssembly module: {reason}")]
    InvalidModule {
        /// wasmtime's explanation.
        reason: String,
    },
    /// The module is valid WebAssembly but not a WASI preview1 command: it
    /// lacks `_start`, or imports something other than WASI preview1.
    #[error("not a WASI command module: {reason}")]
    NotACommand {
        /// What is missing or unsupported.
        reason: String,
    },
    /// The bytes are valid WebAssembly but not a wasi:http proxy component:
    /// a core module, or a component that does not export
    /// `wasi:http/incoming-handler` or imports what the host lacks.
    #[error("not a wasi:http proxy component: {reason}")]
    NotAComponent {
        /// What is missing or unsupported.
        reason: String,
    },
    /// The engine could not be configured (for example the pooling
    /// allocator could not reserve its memory).
    #[error("engine setup failed: {reason}")]
    Setup {
        /// wasmtime's explanation.
        reason: String,
    },
}
