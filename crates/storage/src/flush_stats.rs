//! Process-wide report of segment flushes (the fsyncs of a segment's log and indexes), so
//! the broker can export their time (Kafka's `LogFlushRateAndTimeMs`) without the storage
//! crate knowing about metrics: the broker installs an observer once.

use std::sync::OnceLock;
use std::time::Duration;

static OBSERVER: OnceLock<fn(Duration)> = OnceLock::new();

/// Installs the function told of every flush's duration (the first call wins).
pub fn set_observer(observer: fn(Duration)) {
    let _ = OBSERVER.set(observer);
}

pub(crate) fn flushed(took: Duration) {
    if let Some(observe) = OBSERVER.get() {
        observe(took);
    }
}
