//! Ctrl-C during `fit`: the first asks the loop to stop after the current step and save a
//! resumable checkpoint; a second one exits at once (code 130). The handler is lit's only while a
//! `fit` runs: [`install`] returns a guard, and when the last guard of the process drops (error or
//! not) the handler that was there before is put back, so Ctrl-C after `fit` acts as it did
//! before it. On Unix this module is FFI (`sigaction`); elsewhere Ctrl-C ends the process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Runs holding lit's handler, and the handler to restore when the last one ends.
static HOLDERS: Mutex<(usize, Option<Previous>)> = Mutex::new((0, None));

/// lit's SIGINT handler while at least one of these lives.
pub(crate) struct SigintGuard(());

/// Installs lit's SIGINT handler until the guard drops (nested and concurrent runs share it).
pub(crate) fn install() -> SigintGuard {
    let mut holders = HOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if holders.0 == 0 {
        match sys::install() {
            Ok(previous) => holders.1 = Some(previous),
            Err(e) => crate::warning::warn(&format!(
                "could not install the Ctrl-C handler ({e}); Ctrl-C will end the process at once"
            )),
        }
    }
    holders.0 += 1;
    SigintGuard(())
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        let mut holders = HOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        holders.0 -= 1;
        if holders.0 == 0
            && let Some(previous) = holders.1.take()
        {
            sys::restore(previous);
        }
    }
}

/// Whether Ctrl-C was pressed since the last `clear`.
pub(crate) fn requested() -> bool {
    COUNT.load(Ordering::SeqCst) > 0
}

/// Forgets earlier Ctrl-Cs (a new run starts).
pub(crate) fn clear() {
    COUNT.store(0, Ordering::SeqCst);
}

#[cfg(unix)]
type Previous = libc::sigaction;
#[cfg(not(unix))]
type Previous = ();

#[cfg(unix)]
mod sys {
    use super::{COUNT, Ordering, Previous};

    extern "C" fn on_sigint(_: libc::c_int) {
        if COUNT.fetch_add(1, Ordering::SeqCst) >= 1 {
            // The second Ctrl-C: the user wants out now. `_exit` is async-signal-safe.
            // SAFETY: `_exit` takes no pointers and never returns.
            unsafe { libc::_exit(130) }
        }
    }

    pub(super) fn install() -> std::io::Result<Previous> {
        // SAFETY: `sigaction` is given a fully initialised action (zeroed, then its handler, flags
        // and empty mask set) and a zeroed buffer for the previous one; both outlive the call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, &action, &mut previous) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(previous)
        }
    }

    pub(super) fn restore(previous: Previous) {
        // SAFETY: `previous` is the action `sigaction` returned when lit's was installed.
        let failed = unsafe { libc::sigaction(libc::SIGINT, &previous, std::ptr::null_mut()) } != 0;
        if failed {
            tracing::debug!(target: "lit", error = %std::io::Error::last_os_error(), "could not restore the SIGINT handler");
        }
    }
}

#[cfg(not(unix))]
mod sys {
    use super::Previous;

    pub(super) fn install() -> std::io::Result<Previous> {
        Err(std::io::Error::other("Ctrl-C handling during `fit` needs a Unix system"))
    }

    pub(super) fn restore(_: Previous) {}
}
