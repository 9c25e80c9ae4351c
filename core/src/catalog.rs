//! The catalog: which game ids this peer may announce and serve.
//!
//! Format (TOML):
//! ```toml
//! [[games]]
//! id = "openarena"
//! name = "OpenArena"
//! description = "Fast arena shooter"   # optional
//! genre = "FPS"                        # optional
//! release_year = 2008                  # optional
//! publisher = "OpenArena team"         # optional
//! max_players = 16                     # optional
//! size = 1200000000                    # optional, bytes
//! ```

use crate::game::{GameId, GameIdError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Metadata of one catalog game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Validated id.
    pub id: GameId,
    /// Display name.
    pub name: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Optional genre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Optional release year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_year: Option<u16>,
    /// Optional publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Optional player count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_players: Option<u32>,
    /// Optional size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Catalog errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Not valid TOML or missing fields.
    #[error("catalog is malformed: {0}")]
    Malformed(String),
    /// A bad id.
    #[error("catalog entry #{index}: {source}")]
    BadId {
        /// 1-based entry index.
        index: usize,
        /// The id problem.
        source: GameIdError,
    },
    /// The same id twice.
    #[error("catalog lists game id {0:?} twice")]
    Duplicate(String),
    /// A name that is empty or too long.
    #[error("catalog entry {0:?} has an empty or over-long name")]
    BadName(String),
}

#[derive(Deserialize)]
struct RawCatalog {
    #[serde(default)]
    games: Vec<toml::Table>,
}

/// The set of games a peer may announce and serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    games: BTreeMap<GameId, CatalogEntry>,
}

impl Catalog {
    /// Parses TOML text, validating every id.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| CatalogError::Malformed(e.message().to_owned()))?;
        let mut games = BTreeMap::new();
        for (i, table) in raw.games.into_iter().enumerate() {
            let index = i + 1;
            let id_str = table.get("id").and_then(|v| v.as_str()).map(str::to_owned);
            let Some(id_str) = id_str else {
                return Err(CatalogError::Malformed(format!("entry #{index} has no string `id`")));
            };
            let id = GameId::new(id_str).map_err(|source| CatalogError::BadId { index, source })?;
            let entry: CatalogEntry = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| CatalogError::Malformed(format!("entry #{index} ({id}): {}", e.message())))?;
            if entry.name.trim().is_empty() || entry.name.len() > 256 {
                return Err(CatalogError::BadName(id.to_string()));
            }
            if games.insert(id.clone(), entry).is_some() {
                return Err(CatalogError::Duplicate(id.to_string()));
            }
        }
        Ok(Catalog { games })
    }

    /// Builds a catalog from entries (ids already validated by type).
    pub fn from_entries(entries: impl IntoIterator<Item = CatalogEntry>) -> Self {
        Catalog { games: entries.into_iter().map(|e| (e.id.clone(), e)).collect() }
    }

    /// Serialises back to TOML.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            games: Vec<&'a CatalogEntry>,
        }
        toml::to_string(&Out { games: self.games.values().collect() }).unwrap_or_default()
    }

    /// Whether `id` is in the catalog.
    pub fn contains(&self, id: &GameId) -> bool {
        self.games.contains_key(id)
    }

    /// Looks up an entry by id.
    pub fn get(&self, id: &GameId) -> Option<&CatalogEntry> {
        self.games.get(id)
    }

    /// Looks up an entry by a raw string (e.g. a directory name).
    pub fn get_str(&self, id: &str) -> Option<&CatalogEntry> {
        GameId::new(id).ok().and_then(|id| self.games.get(&id))
    }

    /// All entries, ordered by id.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.games.values()
    }

    /// Number of games.
    pub fn len(&self) -> usize {
        self.games.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.games.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_minimal_entries() {
        let c = Catalog::from_toml(
            r#"
            [[games]]
            id = "openarena"
            name = "OpenArena"
            description = "arena"
            genre = "FPS"
            release_year = 2008
            publisher = "OA"
            max_players = 16
            size = 1000

            [[games]]
            id = "tetris"
            name = "Tetris"
            "#,
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        let oa = c.get_str("openarena").unwrap();
        assert_eq!(oa.max_players, Some(16));
        assert_eq!(c.get_str("tetris").unwrap().genre, None);
        assert_eq!(Catalog::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn rejects_bad_ids_with_clear_errors() {
        for (id, frag) in [
            ("..", "must be one path component"),
            ("a/b", "must be one path component"),
            ("", "empty"),
            ("a\\u0000b", "must be one path component"),
        ] {
            let text = format!("[[games]]\nid = \"{id}\"\nname = \"X\"\n");
            let err = Catalog::from_toml(&text).unwrap_err();
            assert!(matches!(err, CatalogError::BadId { index: 1, .. }), "{id:?}: {err}");
            assert!(err.to_string().contains(frag), "{id:?}: {err}");
        }
    }

    #[test]
    fn rejects_malformed_duplicates_and_missing_fields() {
        assert!(matches!(Catalog::from_toml("[[games]\n"), Err(CatalogError::Malformed(_))));
        assert!(matches!(Catalog::from_toml("[[games]]\nname = \"x\"\n"), Err(CatalogError::Malformed(_))));
        assert!(matches!(Catalog::from_toml("[[games]]\nid = \"a\"\n"), Err(CatalogError::Malformed(_))));
        assert!(matches!(
            Catalog::from_toml("[[games]]\nid = \"a\"\nname = \"A\"\n[[games]]\nid = \"a\"\nname = \"B\"\n"),
            Err(CatalogError::Duplicate(_))
        ));
        assert!(matches!(Catalog::from_toml("[[games]]\nid = \"a\"\nname = \"A\"\nbogus = 1\n"), Err(CatalogError::Malformed(_))));
        assert!(Catalog::from_toml("").unwrap().is_empty());
    }
}
