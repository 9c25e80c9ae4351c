//! The name rule: which paths a game root may hold, on any disk.
//!
//! Windows and macOS disks are case-insensitive, and macOS also treats
//! names that differ only by Unicode normalization as one. A manifest that
//! lists `.LANSPREAD.JSON` or `LOCAL/x.dll` would, on such a disk, write
//! over lanspread's intent log or into the installed game; two entries
//! `a.pak` and `A.pak` would overwrite each other. So names are compared by
//! their *canonical caseless key* (Unicode: NFD of the full case folding of
//! the NFD form), and a manifest is invalid when
//! - the first component of a path has the key of a control name
//!   ([`crate::layout::CONTROL_NAMES`]), or
//! - two of its paths have the same key.
//!
//! The same rule runs on manifests received from peers and on the library's
//! own scan, so lanspread neither writes nor advertises such a tree.

use crate::layout;
use unicode_normalization::UnicodeNormalization;

/// The canonical caseless key of a name or path: two names with the same
/// key are one name on a case-insensitive, normalizing disk.
pub fn caseless_key(name: &str) -> String {
    let nfd: String = name.nfd().collect();
    caseless::default_case_fold_str(&nfd).nfd().collect()
}

/// Whether a root-level name is, on some disk, one of lanspread's control
/// names.
pub fn is_control_name_anywhere(name: &str) -> bool {
    let key = caseless_key(name);
    layout::CONTROL_NAMES.iter().any(|c| caseless_key(c) == key)
}

/// Why a set of paths breaks the name rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A path starts with a control name, up to case or normalization.
    #[error("{0:?} names lanspread's own {1:?} on a case-insensitive disk")]
    Control(String, String),
    /// Two paths are one path on a case-insensitive or normalizing disk.
    #[error("{0:?} and {1:?} are the same path on a case-insensitive or normalizing disk")]
    Collision(String, String),
}

/// Checks paths (relative to a game root, `/`-separated) against the rule.
pub fn check_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), NameError> {
    let controls: Vec<(String, &str)> = layout::CONTROL_NAMES.iter().map(|c| (caseless_key(c), *c)).collect();
    let mut seen = std::collections::BTreeMap::new();
    for path in paths {
        let key = caseless_key(path);
        let top = key.split('/').next().unwrap_or_default();
        if let Some((_, control)) = controls.iter().find(|(k, _)| k == top) {
            return Err(NameError::Control(path.to_owned(), (*control).to_owned()));
        }
        if let Some(other) = seen.insert(key, path) {
            return Err(NameError::Collision(other.to_owned(), path.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_names_are_refused_in_any_case_or_form() {
        for bad in [".LANSPREAD.JSON", "LOCAL/x.dll", "Local", ".Local.Installing/a", ".lanspread_OWNED"] {
            assert!(matches!(check_paths([bad]), Err(NameError::Control(..))), "{bad}");
        }
        assert!(is_control_name_anywhere("LoCaL"));
        assert!(!is_control_name_anywhere("locale"));
        assert!(check_paths(["locale/x", "data/local", "version.ini"]).is_ok());
    }

    #[test]
    fn paths_that_are_one_on_some_disk_collide() {
        assert!(matches!(check_paths(["a.pak", "A.pak"]), Err(NameError::Collision(..))));
        assert!(matches!(check_paths(["data/MAP", "data/map"]), Err(NameError::Collision(..))));
        // "é" precomposed (NFC) and decomposed (NFD).
        assert!(matches!(check_paths(["caf\u{e9}", "cafe\u{301}"]), Err(NameError::Collision(..))));
        // Full case folding: "ß" folds to "ss".
        assert!(matches!(check_paths(["stra\u{df}e", "STRASSE"]), Err(NameError::Collision(..))));
        assert!(check_paths(["a.pak", "b.pak", "a.pak2"]).is_ok());
    }
}
