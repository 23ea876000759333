//! How the process holds on to memory it has freed.
//!
//! The binary allocates with mimalloc (see `main.rs`). Left to its defaults, mimalloc
//! hands freed memory back to the operating system a second after it falls idle, and
//! faults it in again on next use. On a virtual machine whose host takes such memory back
//! (a balloon with free page reporting, as Firecracker's), that next use waits for the
//! host, and in the gate's load benchmark the wait stalled requests for hundreds of
//! milliseconds with the server idle meanwhile; keeping freed memory for reuse removed
//! most of those stalls (docs/BENCHMARKS.md, "fifth session", has the runs).
//!
//! The cost is that the process keeps its high-water mark of memory until it exits, which
//! for a gateway is a working set it will need again at the next burst. An operator who
//! would rather have memory returned sets mimalloc's own `MIMALLOC_PURGE_DELAY`
//! (milliseconds idle before memory is returned), and that is respected.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// mimalloc 3's `mi_option_purge_delay` (its `include/mimalloc.h`): how long freed memory
/// stays before it is returned; -1 for never. `libmimalloc-sys` exports no name for it.
const PURGE_DELAY: mi_option_t = 15;

/// The variables mimalloc reads the purge delay from (the second is its older name); it
/// matches them without regard to case, and so does [`operator_chose`].
const PURGE_DELAY_VARS: [&str; 2] = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"];

/// Keeps memory the process frees for its own reuse, unless the operator set mimalloc's
/// purge delay. Call it first thing in `main`, before any other thread starts.
pub fn keep_freed_memory() {
    if !operator_chose() {
        // SAFETY: mimalloc keeps its options in plain integers and checks the index; this
        // runs before any other thread exists, so nothing reads the option meanwhile.
        unsafe { mi_option_set(PURGE_DELAY, -1) };
    }
}

/// Whether the environment sets the purge delay, by any of the names mimalloc reads.
fn operator_chose() -> bool {
    std::env::vars_os().any(|(k, _)| k.to_str().is_some_and(|k| PURGE_DELAY_VARS.iter().any(|v| v.eq_ignore_ascii_case(k))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay_ms() -> std::ffi::c_long {
        // SAFETY: reads a plain integer option; nothing else in this test binary sets it.
        unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
    }

    #[test]
    fn freed_memory_is_kept_by_setting_mimallocs_purge_delay_to_never() {
        if operator_chose() {
            return; // the operator's choice stands, and the default cannot be checked
        }
        // 1,000 ms is mimalloc 3's default purge delay and no other option's default: if
        // an upgrade renumbered its options (or fell back to mimalloc 2, where the default
        // is 10 ms), this is where it shows.
        assert_eq!(purge_delay_ms(), 1000, "option {PURGE_DELAY} is not mimalloc 3's purge delay");
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
