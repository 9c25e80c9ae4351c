//! Validated relative paths: the only kind of path a port accepts.
//!
//! A [`RelPath`] is relative to the root handle of a filesystem port, uses
//! `/` as separator and contains only normal components. Every rule a peer
//! could abuse to escape a game root, or to create a name that misbehaves on
//! another platform, is rejected here, before any filesystem sees the path.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted component, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Deepest accepted nesting.
pub const MAX_DEPTH: usize = 64;

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Longer than [`MAX_PATH_LEN`] or a component longer than [`MAX_COMPONENT_LEN`].
    #[error("path too long")]
    TooLong,
    /// More than [`MAX_DEPTH`] components.
    #[error("path nested too deeply")]
    TooDeep,
    /// Starts with `/` or is a drive / UNC form.
    #[error("path is absolute: {0:?}")]
    Absolute(String),
    /// Empty component (`a//b`, leading or trailing `/`).
    #[error("path has an empty component: {0:?}")]
    EmptyComponent(String),
    /// `.` or `..`.
    #[error("path has a `.` or `..` component: {0:?}")]
    DotComponent(String),
    /// A character Windows refuses (`\\ : < > " | ? *`), a control
    /// character, or an invisible (default-ignorable) code point.
    #[error("path has a character Windows refuses, a control character or an invisible one: {0:?}")]
    ForbiddenChar(String),
    /// CON, PRN, AUX, NUL, CONIN$, CONOUT$, COM0-9, LPT0-9 and COM¹-³,
    /// LPT¹-³ (with or without extension).
    #[error("path uses a Windows-reserved name: {0:?}")]
    ReservedName(String),
    /// A component ends with `.` or a space.
    #[error("path component ends with a dot or space: {0:?}")]
    TrailingDotOrSpace(String),
}

/// A validated relative path (`""` is the root itself).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RelPath(String);

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(s).map_err(|e| {
            REFUSED.with(|r| *r.borrow_mut() = Some(e.clone()));
            serde::de::Error::custom(e)
        })
    }
}

thread_local! {
    /// The last path a decode refused on this thread. Some formats keep no
    /// message of a custom serde error (postcard's is a bare
    /// `SerdeDeCustom`), so a decoder that must name the refused path reads
    /// it here with [`take_refused_path`].
    static REFUSED: std::cell::RefCell<Option<PathError>> = const { std::cell::RefCell::new(None) };
}

/// Takes why the last path refused by a decode on this thread was refused
/// (it names the path). Call it before decoding, to forget older refusals,
/// and after a decode failed.
pub fn take_refused_path() -> Option<PathError> {
    REFUSED.with(|r| r.borrow_mut().take())
}

impl RelPath {
    /// The root.
    pub fn root() -> Self {
        RelPath(String::new())
    }

    /// Validates `s`. The empty string is the root.
    pub fn new(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        check(&s)?;
        Ok(RelPath(s))
    }

    /// Validates a single component (no `/`).
    pub fn component(name: &str) -> Result<Self, PathError> {
        if name.contains('/') {
            return Err(PathError::ForbiddenChar(name.to_owned()));
        }
        if name.is_empty() {
            return Err(PathError::EmptyComponent(name.to_owned()));
        }
        RelPath::new(name)
    }

    /// `self/name` where `name` may itself contain `/`.
    pub fn join(&self, name: &str) -> Result<Self, PathError> {
        if self.0.is_empty() {
            return RelPath::new(name);
        }
        if name.is_empty() {
            return Err(PathError::EmptyComponent(name.to_owned()));
        }
        RelPath::new(format!("{}/{}", self.0, name))
    }

    /// `self/name` for a `name` read from the local disk (by `read_dir`).
    ///
    /// Local names are only checked to be one real component (not empty,
    /// `.`, `..`, and without `/` or NUL): the stricter portability rules
    /// of [`RelPath::new`] apply to peer-supplied paths, not to names that
    /// already exist beneath our own root.
    pub fn join_local(&self, name: &str) -> Result<Self, PathError> {
        if name.is_empty() {
            return Err(PathError::EmptyComponent(name.to_owned()));
        }
        if name == "." || name == ".." {
            return Err(PathError::DotComponent(name.to_owned()));
        }
        if name.contains('/') || name.contains('\0') {
            return Err(PathError::ForbiddenChar(name.to_owned()));
        }
        let joined = if self.0.is_empty() { name.to_owned() } else { format!("{}/{}", self.0, name) };
        if joined.len() > MAX_PATH_LEN * 2 {
            return Err(PathError::TooLong);
        }
        Ok(RelPath(joined))
    }

    /// Whether the path also passes the strict rules of [`RelPath::new`]
    /// (portable, safe to announce to peers).
    pub fn is_portable(&self) -> bool {
        check(&self.0).is_ok()
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The parent (the root's parent is `None`).
    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_owned()),
            None => RelPath::root(),
        })
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// Whether `self` is `other` or lies beneath it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty() || self.0 == other.0 || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// `self` with the prefix `base/` removed, if `self` lies beneath `base`.
    pub fn strip_prefix(&self, base: &RelPath) -> Option<RelPath> {
        if base.0.is_empty() {
            return Some(self.clone());
        }
        if self.0 == base.0 {
            return Some(RelPath::root());
        }
        self.0.strip_prefix(&base.0)?.strip_prefix('/').map(|s| RelPath(s.to_owned()))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

const RESERVED: &[&str] = &["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];

/// Windows reserves `COM` and `LPT` followed by one digit, `0` to `9`, and
/// the superscript digits `¹`, `²` and `³` (ISO 8859-1's, which it also
/// takes for digits), with or without an extension.
fn is_reserved(component: &str) -> bool {
    let stem = component.split('.').next().unwrap_or("").trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if RESERVED.contains(&upper.as_str()) {
        return true;
    }
    let Some(digit) = upper.strip_prefix("COM").or_else(|| upper.strip_prefix("LPT")) else { return false };
    let mut chars = digit.chars();
    matches!((chars.next(), chars.next()), (Some('0'..='9' | '¹' | '²' | '³'), None))
}

/// Characters no Windows name may hold (besides `/`, the separator):
/// `\`, `:` (an NTFS stream), and `< > " | ? *` (wildcards and shell
/// syntax that `CreateFileW` refuses).
const WINDOWS_FORBIDDEN: &[char] = &['\\', ':', '<', '>', '"', '|', '?', '*'];

/// Whether `c` may not appear in a name: a control character, one Windows
/// forbids, or a default-ignorable code point. The last are invisible, and
/// some disks ignore them when they compare names (HFS+ drops U+200C-U+200F,
/// U+202A-U+202E, U+206A-U+206F and U+FEFF), so `loc\u{200C}al` would be
/// `local` there; the bidirectional controls among them also make a name
/// read differently from what it is.
fn is_forbidden_char(c: char) -> bool {
    c.is_control() || WINDOWS_FORBIDDEN.contains(&c) || is_default_ignorable(c)
}

/// Unicode's `Default_Ignorable_Code_Point` property (DerivedCoreProperties,
/// Unicode 15), which includes every bidirectional format control.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

fn check(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let owned = || s.to_owned();
    if s.starts_with('/') || s.starts_with("\\\\") {
        return Err(PathError::Absolute(owned()));
    }
    let b = s.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(PathError::Absolute(owned()));
    }
    if s.chars().any(is_forbidden_char) {
        return Err(PathError::ForbiddenChar(owned()));
    }
    let mut depth = 0;
    for c in s.split('/') {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        if c.is_empty() {
            return Err(PathError::EmptyComponent(owned()));
        }
        if c.len() > MAX_COMPONENT_LEN {
            return Err(PathError::TooLong);
        }
        if c == "." || c == ".." {
            return Err(PathError::DotComponent(owned()));
        }
        if c.ends_with('.') || c.ends_with(' ') {
            return Err(PathError::TrailingDotOrSpace(owned()));
        }
        if is_reserved(c) {
            return Err(PathError::ReservedName(owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for p in
            ["", "a", "a/b.txt", ".hidden", "Game Data/level 1.pak", "console/x", "COM10", "lpt", "COM¹0", "Çà/日本語 [v1] (final)/ü.pak"]
        {
            assert!(RelPath::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn rejects_every_escape_form() {
        type Check = fn(&PathError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("..", |e| matches!(e, PathError::DotComponent(_))),
            ("a/../b", |e| matches!(e, PathError::DotComponent(_))),
            ("./a", |e| matches!(e, PathError::DotComponent(_))),
            ("/etc/passwd", |e| matches!(e, PathError::Absolute(_))),
            ("C:/Windows", |e| matches!(e, PathError::Absolute(_))),
            ("c:x", |e| matches!(e, PathError::Absolute(_))),
            ("\\\\server\\share", |e| matches!(e, PathError::Absolute(_))),
            ("a\\b", |e| matches!(e, PathError::ForbiddenChar(_))),
            ("a\0b", |e| matches!(e, PathError::ForbiddenChar(_))),
            ("a/b:stream", |e| matches!(e, PathError::ForbiddenChar(_))),
            ("a//b", |e| matches!(e, PathError::EmptyComponent(_))),
            ("a/", |e| matches!(e, PathError::EmptyComponent(_))),
            ("CON", |e| matches!(e, PathError::ReservedName(_))),
            ("dir/nul.txt", |e| matches!(e, PathError::ReservedName(_))),
            ("Com1.log", |e| matches!(e, PathError::ReservedName(_))),
            ("LPT9", |e| matches!(e, PathError::ReservedName(_))),
            ("file.", |e| matches!(e, PathError::TrailingDotOrSpace(_))),
            ("dir /x", |e| matches!(e, PathError::TrailingDotOrSpace(_))),
            ("COM0", |e| matches!(e, PathError::ReservedName(_))),
            ("lpt0.txt", |e| matches!(e, PathError::ReservedName(_))),
            ("COM¹", |e| matches!(e, PathError::ReservedName(_))),
            ("a/Lpt³.dat", |e| matches!(e, PathError::ReservedName(_))),
            ("conin$", |e| matches!(e, PathError::ReservedName(_))),
            ("loc\u{200C}al/x.dll", |e| matches!(e, PathError::ForbiddenChar(_))),
            ("evil\u{202E}txt.exe", |e| matches!(e, PathError::ForbiddenChar(_))),
            ("\u{FEFF}bom", |e| matches!(e, PathError::ForbiddenChar(_))),
        ];
        for c in ['<', '>', '"', '|', '?', '*', ':', '\\', '\u{7}'] {
            let e = RelPath::new(format!("a/b{c}c")).expect_err("refused");
            assert!(matches!(e, PathError::ForbiddenChar(_)), "{c:?}: {e:?}");
        }
        for (p, ok) in cases {
            let e = RelPath::new(*p).expect_err(p);
            assert!(ok(&e), "{p}: {e:?}");
        }
        assert_eq!(RelPath::new("a/".repeat(100) + "b").unwrap_err(), PathError::TooDeep);
        assert_eq!(RelPath::new("x".repeat(300)).unwrap_err(), PathError::TooLong);
    }

    #[test]
    fn structure_helpers() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), "c");
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(!RelPath::new("a/bc").unwrap().starts_with(&RelPath::new("a/b").unwrap()));
        assert_eq!(p.strip_prefix(&RelPath::new("a").unwrap()).unwrap().as_str(), "b/c");
        assert_eq!(RelPath::root().join("x/y").unwrap().as_str(), "x/y");
        assert!(RelPath::component("a/b").is_err());
        assert!(serde_json_like_roundtrip_rejects_bad());
    }

    fn serde_json_like_roundtrip_rejects_bad() -> bool {
        // Deserialisation validates too: a hostile peer cannot smuggle a path in.
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let d: StrDeserializer<'_, Error> = "../x".into_deserializer();
        RelPath::deserialize(d).is_err()
    }
}
