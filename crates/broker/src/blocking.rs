//! Running blocking work (disk I/O) from async code without stalling the runtime.

/// Runs blocking work (log recovery at start-up, a transaction's marker writes) without
/// stalling the other tasks of a multi-threaded runtime.
pub fn block_in_place_or_run<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
