//! What a peer's discovery advert says about its library, so that library
//! news travels by multicast instead of by every peer asking every other.
//!
//! An advert is anyone's word: the hint only decides *whether to ask* a peer
//! for its game list (a changed revision), never what the list holds. A
//! forged hint costs one `ListGames` to the address the peer proved itself
//! at, at worst.

use std::collections::BTreeMap;

/// Advert key of the library revision.
const KEY_REV: &str = "rev";
/// Advert key of the number of games offered.
const KEY_GAMES: &str = "games";

/// A peer's library, as its advert summarizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibraryHint {
    /// Revision of what the peer serves (the `library_rev` of its `Pong`).
    pub rev: u64,
    /// How many games it serves.
    pub games: u32,
}

impl LibraryHint {
    /// Writes the hint into an advert's properties.
    pub fn write(&self, meta: &mut BTreeMap<String, String>) {
        meta.insert(KEY_REV.to_owned(), self.rev.to_string());
        meta.insert(KEY_GAMES.to_owned(), self.games.to_string());
    }

    /// Reads the hint from an advert's properties; `None` when either key is
    /// missing or malformed (an advert without one is listed as before).
    pub fn read(meta: &BTreeMap<String, String>) -> Option<LibraryHint> {
        let rev = meta.get(KEY_REV)?.parse().ok()?;
        let games = meta.get(KEY_GAMES)?.parse().ok()?;
        Some(LibraryHint { rev, games })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn malformed_or_partial_hints_are_no_hint() {
        let meta = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(LibraryHint::read(&meta(&[("rev", "3")])), None);
        assert_eq!(LibraryHint::read(&meta(&[("rev", "-1"), ("games", "2")])), None);
        assert_eq!(LibraryHint::read(&meta(&[("rev", "3"), ("games", "99999999999")])), None);
        assert_eq!(LibraryHint::read(&meta(&[("rev", "3"), ("games", "2")])), Some(LibraryHint { rev: 3, games: 2 }));
    }

    proptest! {
        #[test]
        fn a_hint_reads_back_as_written(rev: u64, games: u32) {
            let mut meta = BTreeMap::from([("name".to_owned(), "x".to_owned())]);
            let hint = LibraryHint { rev, games };
            hint.write(&mut meta);
            prop_assert_eq!(LibraryHint::read(&meta), Some(hint));
        }
    }
}
