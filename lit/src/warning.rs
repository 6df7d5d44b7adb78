//! Warnings that reach the user. Each is a `tracing` event (target `lit`, level WARN); while no
//! global `tracing` subscriber is installed, it is also written to stderr as `lit warning: …`,
//! so that a program that installed none still sees it. [`set_stderr_warnings`]`(false)` turns
//! the stderr line off.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDERR: AtomicBool = AtomicBool::new(true);

/// Whether lit writes its warnings to stderr when no `tracing` subscriber is installed (on by
/// default). With a subscriber, warnings go only to it.
pub fn set_stderr_warnings(on: bool) {
    STDERR.store(on, Ordering::Relaxed);
}

/// Whether a warning should also be written to stderr now.
fn to_stderr() -> bool {
    STDERR.load(Ordering::Relaxed) && !tracing::dispatcher::has_been_set()
}

/// Emits `message` as a warning: a `tracing` event, and a stderr line without a subscriber.
pub(crate) fn warn(message: &str) {
    warn_with(message, |line| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
}

/// [`warn`], with the stderr line (`lit warning: …`) written by `write` (e.g. above progress
/// bars).
pub(crate) fn warn_with(message: &str, write: impl FnOnce(&str)) {
    tracing::warn!(target: "lit", "{message}");
    if to_stderr() {
        write(&format!("lit warning: {message}"));
    }
}
