//! How the process holds on to memory it has freed.
//!
//! The binary allocates with mimalloc (see `main.rs`). Left to its defaults, mimalloc
//! hands freed memory back to the operating system a second after it falls idle, and
//! faults it in again on next use. On a virtual machine whose host takes such memory back
//! (a balloon with free page reporting, as Firecracker's), that next use waits for the
//! host, and the wait was long: in the gate's load benchmark (`benches/gate_load.rs`)
//! requests after a lull stalled for up to 570 ms in 9 of 24 fixed-rate steps, with the
//! server idle meanwhile. Keeping freed memory for reuse left 2 of 24, both the first
//! burst after the server started, and the others' worst request at 2–47 ms
//! (docs/BENCHMARKS.md, "fifth session").
//!
//! The cost is that the process keeps its high-water mark of memory until it exits, which
//! for a gateway is a working set it will need again at the next burst. An operator who
//! would rather have memory returned sets `MIMALLOC_PURGE_DELAY` (milliseconds idle before
//! it is returned; mimalloc's own setting), and that is respected.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc 3's `mi_option_purge_delay` (its `include/mimalloc.h`): how long freed memory
/// stays before it is returned; -1 for never. `libmimalloc-sys` exports no name for it.
const PURGE_DELAY: mi_option_t = 15;

/// What the operator sets to choose otherwise; read by mimalloc itself.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// Keeps memory the process frees for its own reuse, unless `MIMALLOC_PURGE_DELAY` says
/// otherwise. Called first thing in `main`, before the threads that allocate start.
pub fn keep_freed_memory() {
    if std::env::var_os(PURGE_DELAY_VAR).is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads options atomically and
        // allows them to change at any time.
        unsafe { mi_option_set(PURGE_DELAY, -1) };
    }
}

/// The purge delay in force, in milliseconds (-1: never).
pub fn purge_delay_ms() -> std::ffi::c_long {
    // SAFETY: reads a plain integer option.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_kept_by_setting_mimallocs_purge_delay_to_never() {
        if std::env::var_os(PURGE_DELAY_VAR).is_some() {
            return; // the operator's choice stands, and the default cannot be checked
        }
        // 1,000 ms is mimalloc 3's default purge delay and no other option's default: if
        // an upgrade renumbered its options, this is where it shows.
        assert_eq!(purge_delay_ms(), 1000, "option {PURGE_DELAY} is no longer mimalloc's purge delay");
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
