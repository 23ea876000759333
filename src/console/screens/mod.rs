//! The screens: each file holds one screen's state, how it answers commands, and how it
//! is drawn.

pub mod access;
pub mod approvals;
pub mod audit;
pub mod simulate;
pub mod switches;

/// Where a list's visible window starts so that `cursor` is on screen: the window
/// scrolls only when the cursor would leave it. Pure: the same inputs give the same
/// window, so drawing needs no stored scroll state.
pub fn window_start(cursor: usize, len: usize, height: usize) -> usize {
    if height == 0 || len <= height {
        return 0;
    }
    cursor.saturating_sub(height - 1).min(len - height)
}
