//! The user's own files: the stored session, the console's settings, custom themes.
//!
//! They live in the platform's config directory (`~/.config/countersign` on Linux), or
//! in `COUNTERSIGN_CONFIG_DIR` when set. The session file holds a bearer secret, so it is
//! written with mode 0600, atomically (a temporary file renamed into place).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The directory for the user's Countersign files.
pub fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("COUNTERSIGN_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    dirs::config_dir().map(|d| d.join("countersign"))
}

/// A signed-in session, as `countersign login` stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    pub server: String,
    pub token: String,
    pub expires_at: String,
    pub workspace: String,
    pub email: String,
}

fn session_path(dir: &Path) -> PathBuf {
    dir.join("session.json")
}

/// The stored session, if there is one and it can be read.
pub fn load_session() -> Option<StoredSession> {
    let text = std::fs::read_to_string(session_path(&dir()?)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Stores a session, readable by its owner only. Returns where.
pub fn save_session(s: &StoredSession) -> std::io::Result<PathBuf> {
    let dir = dir().ok_or_else(|| std::io::Error::other("no config directory; set COUNTERSIGN_CONFIG_DIR"))?;
    std::fs::create_dir_all(&dir)?;
    let path = session_path(&dir);
    let tmp = dir.join(format!(".session.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    crate::vault::write_private(&tmp, serde_json::to_string_pretty(s).map_err(std::io::Error::other)?.as_bytes())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Forgets the stored session.
pub fn clear_session() -> std::io::Result<()> {
    match dir() {
        Some(d) => match std::fs::remove_file(session_path(&d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

/// The console's settings (`config.toml`). Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The server to use when neither `--server` nor a stored session says.
    pub server: Option<String>,
    /// A theme name: built-in, or a file in `<config dir>/themes/`.
    pub theme: Option<String>,
    /// Ring the terminal bell when an approval is requested (default off).
    #[serde(default)]
    pub bell: bool,
    /// Mouse support (default off, so text stays selectable over SSH).
    #[serde(default)]
    pub mouse: bool,
    /// Key bindings to change: a command name and its new key, e.g. `approve = "A"`,
    /// `kill = "ctrl-k"`. See `countersign config keys` for the names.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
}

/// Reads `config.toml`; a missing file is the defaults, a broken one an error.
pub fn load_settings() -> Result<Settings, String> {
    let Some(d) = dir() else { return Ok(Settings::default()) };
    let path = d.join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
