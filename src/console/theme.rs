//! The one theme: every style the console draws with, named by meaning, loaded from
//! TOML (the built-in files in `themes/`, or a user's own in the config directory).
//!
//! `NO_COLOR` (any value) gives a monochrome theme in which selection, diffs and banners
//! still read: reverse video, bold, and the `+`/`-` marks the diff always carries.

use std::collections::BTreeMap;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The themes that ship inside the binary.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("high-contrast", include_str!("../../themes/high-contrast.toml")),
    ("ansi16", include_str!("../../themes/ansi16.toml")),
];

#[derive(Clone, Debug, PartialEq)]
pub struct Theme {
    pub name: String,
    pub base: Style,
    pub muted: Style,
    pub accent: Style,
    pub selection: Style,
    pub ok: Style,
    pub warn: Style,
    pub danger: Style,
    pub diff_add: Style,
    pub diff_del: Style,
    pub diff_add_word: Style,
    pub diff_del_word: Style,
    pub banner: Style,
    pub border: Style,
    pub title: Style,
    pub key: Style,
    pub disabled: Style,
}

#[derive(Deserialize)]
struct Entry {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    italic: bool,
    #[serde(default)]
    underline: bool,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
struct File {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    #[serde(flatten)]
    entries: BTreeMap<String, Entry>,
}

fn color(s: &str, key: &str) -> Result<Color, String> {
    if let Ok(i) = s.parse::<u8>() {
        return Ok(Color::Indexed(i));
    }
    if s.starts_with('#') {
        return Err(format!("`{key}`: truecolor ({s}) is not supported; use a name or an index 0–255"));
    }
    Color::from_str(s).map_err(|_| format!("`{key}`: unknown colour `{s}`"))
}

/// Whether a terminal says it shows 256 colours (or more): `COLORTERM=truecolor|24bit`,
/// or a `TERM` naming 256 or direct colour. The default theme uses 256; a terminal that
/// does not say so (an SSH session's plain `xterm`, `screen`, `linux`) gets the 16-colour
/// theme, whose every colour it has. A theme named by `--theme` or the config wins.
pub fn colours_256(term: Option<&str>, colorterm: Option<&str>) -> bool {
    matches!(colorterm, Some("truecolor" | "24bit")) || term.is_some_and(|t| t.contains("256color") || t.contains("direct"))
}

impl Theme {
    /// Parses a theme file.
    pub fn parse(text: &str) -> Result<Theme, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut styles: BTreeMap<String, Style> = BTreeMap::new();
        for (key, e) in &file.entries {
            let mut s = Style::default();
            if let Some(fg) = &e.fg {
                s = s.fg(color(fg, key)?);
            }
            if let Some(bg) = &e.bg {
                s = s.bg(color(bg, key)?);
            }
            let mut m = Modifier::empty();
            m.set(Modifier::BOLD, e.bold);
            m.set(Modifier::ITALIC, e.italic);
            m.set(Modifier::UNDERLINED, e.underline);
            m.set(Modifier::REVERSED, e.reverse);
            styles.insert(key.clone(), s.add_modifier(m));
        }
        let get = |k: &str| styles.get(k).copied().unwrap_or_default();
        Ok(Theme {
            name: file.name.clone(),
            base: get("base"),
            muted: get("muted"),
            accent: get("accent"),
            selection: get("selection"),
            ok: get("ok"),
            warn: get("warn"),
            danger: get("danger"),
            diff_add: get("diff-add"),
            diff_del: get("diff-del"),
            diff_add_word: get("diff-add-word"),
            diff_del_word: get("diff-del-word"),
            banner: get("banner"),
            border: get("border"),
            title: get("title"),
            key: get("key"),
            disabled: get("disabled"),
        })
    }

    /// A built-in theme by name.
    pub fn built_in(name: &str) -> Option<Theme> {
        BUILT_IN.iter().find(|(n, _)| *n == name).and_then(|(_, text)| Theme::parse(text).ok())
    }

    /// The default theme.
    pub fn default_theme() -> Theme {
        Theme::built_in("dark").expect("the built-in dark theme parses")
    }

    /// Monochrome, for `NO_COLOR`: meaning carried by reverse video and bold alone.
    pub fn monochrome() -> Theme {
        let plain = Style::default();
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let reverse = Style::default().add_modifier(Modifier::REVERSED);
        Theme {
            name: "no-color".into(),
            base: plain,
            muted: plain,
            accent: bold,
            selection: reverse,
            ok: plain,
            warn: bold,
            danger: bold,
            diff_add: plain,
            diff_del: plain,
            diff_add_word: Style::default().add_modifier(Modifier::UNDERLINED | Modifier::BOLD),
            diff_del_word: Style::default().add_modifier(Modifier::UNDERLINED | Modifier::BOLD),
            banner: reverse.add_modifier(Modifier::BOLD),
            border: plain,
            title: bold,
            key: bold,
            disabled: Style::default().add_modifier(Modifier::DIM),
        }
    }

    /// Resolves a theme name: a user's file in `<config>/themes/<name>.toml` first, then
    /// the built-ins. `NO_COLOR` wins over everything.
    pub fn resolve(name: Option<&str>, config_dir: Option<&std::path::Path>) -> Result<Theme, String> {
        if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            return Ok(Theme::monochrome());
        }
        let Some(name) = name else {
            return Ok(if colours_256(std::env::var("TERM").ok().as_deref(), std::env::var("COLORTERM").ok().as_deref()) {
                Theme::default_theme()
            } else {
                Theme::built_in("ansi16").expect("the built-in ansi16 theme parses")
            });
        };
        if let Some(dir) = config_dir {
            let path = dir.join("themes").join(format!("{name}.toml"));
            if path.exists() {
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                return Theme::parse(&text).map_err(|e| format!("{}: {e}", path.display()));
            }
        }
        Theme::built_in(name).ok_or_else(|| {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            format!("there is no theme `{name}`; the built-in themes are {}", names.join(", "))
        })
    }

    /// The names of the themes available (built-in and the user's own).
    pub fn available(config_dir: Option<&std::path::Path>) -> Vec<String> {
        let mut names: Vec<String> = BUILT_IN.iter().map(|(n, _)| n.to_string()).collect();
        if let Some(dir) = config_dir
            && let Ok(rd) = std::fs::read_dir(dir.join("themes"))
        {
            for e in rd.flatten() {
                if let Some(n) = e.path().file_stem().and_then(|s| s.to_str())
                    && e.path().extension().is_some_and(|x| x == "toml")
                    && !names.iter().any(|x| x == n)
                {
                    names.push(n.to_string());
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_terminal_that_says_it_has_256_colours_gets_them_by_default() {
        assert!(colours_256(Some("xterm-256color"), None));
        assert!(colours_256(Some("xterm"), Some("truecolor")));
        assert!(colours_256(Some("xterm-direct"), None));
        for term in [Some("xterm"), Some("screen"), Some("linux"), Some("vt100"), None] {
            assert!(!colours_256(term, None), "{term:?}");
        }
    }

    #[test]
    fn every_built_in_theme_parses_and_sets_every_meaning() {
        for (name, text) in BUILT_IN {
            let t = Theme::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.name, *name);
            for (what, style) in [("selection", t.selection), ("banner", t.banner), ("danger", t.danger), ("diff-add", t.diff_add)] {
                assert_ne!(style, Style::default(), "{name} leaves {what} unset");
            }
        }
    }

    #[test]
    fn truecolor_is_refused() {
        let err = Theme::parse("name = \"x\"\n[base]\nfg = \"#ff0000\"\n").unwrap_err();
        assert!(err.contains("truecolor"), "{err}");
    }

    #[test]
    fn monochrome_still_marks_selection_and_banners() {
        let m = Theme::monochrome();
        assert!(m.selection.add_modifier.contains(Modifier::REVERSED));
        assert!(m.banner.add_modifier.contains(Modifier::REVERSED));
        assert_eq!(m.danger.fg, None);
    }
}
