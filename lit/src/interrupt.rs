//! Ctrl-C during `fit`: the first asks the loop to stop after the current step and save a
//! resumable checkpoint; a second one exits at once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the process's SIGINT handler (once); false if another handler was already set.
pub(crate) fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        let installed = ctrlc::set_handler(|| {
            if COUNT.fetch_add(1, Ordering::SeqCst) >= 1 {
                // The second Ctrl-C: the user wants out now.
                std::process::exit(130);
            }
        });
        if let Err(e) = &installed {
            tracing::warn!(target: "lit", error = %e, "could not install the Ctrl-C handler; Ctrl-C will end the process at once");
        }
        installed.is_ok()
    })
}

/// Whether Ctrl-C was pressed since the last `clear`.
pub(crate) fn requested() -> bool {
    COUNT.load(Ordering::SeqCst) > 0
}

/// Forgets earlier Ctrl-Cs (a new run starts).
pub(crate) fn clear() {
    COUNT.store(0, Ordering::SeqCst);
}
