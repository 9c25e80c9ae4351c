//! The server's request handler: decides, without IO, what to answer.
//!
//! Only games in the catalog that are downloaded (and not in the middle of
//! an operation) are served, only files listed in their manifest, and only
//! ranges inside those files. The caller streams file bytes for
//! [`Reply::Data`] through the `Fs` port.

use crate::catalog::Catalog;
use crate::game::{EntryKind, GameId, GameSummary, Manifest};
use crate::protocol::{ErrorCode, GameDetails, HaveNews, Held, Request, Response, MAX_CHUNK_REQUEST};
use crate::units::{UnitIdx, UnitLayout};
use lanspread_ports::fs::ReadPiece;
use lanspread_ports::path::RelPath;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the server may serve: a snapshot taken from the local library.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeView {
    /// The catalog.
    pub catalog: Catalog,
    /// Servable games.
    pub games: BTreeMap<GameId, Arc<ServedGame>>,
    /// Bumped whenever the served library changes (peers re-list on change).
    pub revision: u64,
}

/// One servable game: its summary, its manifest and the manifest's unit
/// layout, computed once per manifest rather than once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedGame {
    /// Summary.
    pub summary: GameSummary,
    /// Manifest.
    pub manifest: Arc<Manifest>,
    /// Where its units are read from.
    pub units: UnitSource,
}

impl ServedGame {
    /// Serves `manifest` under `summary`.
    pub fn new(summary: GameSummary, manifest: Manifest) -> Self {
        let units = UnitSource::new(&summary.id, &manifest);
        ServedGame { summary, manifest: Arc::new(manifest), units }
    }
}

/// The units of one manifest and where their pieces lie beneath the game
/// directory: what a committed game serves, and what a download in
/// progress serves of the units it verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSource {
    /// The manifest's units.
    pub layout: Arc<UnitLayout>,
    /// Each manifest entry's path beneath the game directory (empty if one
    /// cannot be formed, and then no unit is served).
    paths: Vec<RelPath>,
}

impl UnitSource {
    /// The units of `manifest`, read from the root of `id`.
    pub fn new(id: &GameId, manifest: &Manifest) -> Self {
        UnitSource { layout: Arc::new(UnitLayout::of(manifest)), paths: manifest.paths_under(&id.root()).unwrap_or_default() }
    }

    /// What to send for `unit` of game `id`.
    pub fn reply(&self, id: &GameId, unit: UnitIdx) -> Reply {
        let pieces = self.layout.pieces(unit);
        if pieces.is_empty() {
            return refuse(ErrorCode::BadRange, format!("{id} has no {unit}"));
        }
        let mut out = Vec::with_capacity(pieces.len());
        for p in pieces {
            match self.paths.get(p.file.index()) {
                Some(path) => out.push(ReadPiece { path: path.clone(), offset: p.offset, len: p.len as usize }),
                None => return refuse(ErrorCode::BadRequest, format!("{id}: a path of its manifest is too long to serve")),
            }
        }
        Reply::Pieces { pieces: out, len: self.layout.len(unit) }
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A framed message.
    Message(Response),
    /// `Response::Data { len }` followed by `len` bytes of `path` (relative to
    /// the game directory) from `offset`.
    Data {
        /// File path beneath the game directory.
        path: RelPath,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// `Response::Data { len }` followed by each piece's bytes, in order
    /// (paths relative to the game directory); `len` is their sum.
    Pieces {
        /// What to read.
        pieces: Vec<ReadPiece>,
        /// Total bytes.
        len: u64,
    },
}

fn refuse(code: ErrorCode, msg: impl Into<String>) -> Reply {
    Reply::Message(Response::error(code, msg))
}

impl ServeView {
    /// Handles one request (not `Hello`/`Ping`, which are connection-level).
    pub fn handle(&self, req: &Request) -> Reply {
        match req {
            Request::ListGames => Reply::Message(Response::Games(self.games.values().map(|g| g.summary.clone()).collect())),
            Request::GetGame { id } => match self.games.get(id) {
                Some(g) => {
                    Reply::Message(Response::Game(Box::new(GameDetails { summary: g.summary.clone(), manifest: (*g.manifest).clone() })))
                }
                None => refuse(ErrorCode::UnknownGame, format!("game {id} is not served here")),
            },
            Request::GetUnit { id, digest, unit } => self.unit(id, digest, *unit),
            Request::GetGameFileData { id, path } => self.data(id, path, 0, None),
            Request::GetGameFileChunk { id, path, offset, len } => self.data(id, path, *offset, Some(*len)),
            Request::Have { id, digest, .. } => match self.games.get(id).filter(|g| g.summary.manifest_digest == *digest) {
                Some(_) => Reply::Message(Response::Have(HaveNews { epoch: 0, held: Held::All, members: Vec::new() })),
                None => refuse(ErrorCode::UnknownGame, format!("{id} with this manifest is not held here")),
            },
            Request::Hello(_) | Request::Ping { .. } | Request::Confirm { .. } => {
                refuse(ErrorCode::BadRequest, "connection-level request on a data stream")
            }
        }
    }

    fn data(&self, id: &GameId, path: &RelPath, offset: u64, len: Option<u64>) -> Reply {
        let Some(game) = self.games.get(id) else {
            return refuse(ErrorCode::UnknownGame, format!("game {id} is not served here"));
        };
        let Some(file) = game.manifest.file(path).filter(|f| f.kind == EntryKind::File) else {
            return refuse(ErrorCode::NotInManifest, format!("{path} is not a file of {id}"));
        };
        let len = len.unwrap_or(file.size);
        match offset.checked_add(len) {
            Some(end) if end <= file.size => {}
            _ => return refuse(ErrorCode::BadRange, format!("range {offset}+{len} is outside {path} ({} bytes)", file.size)),
        };
        // Whole-file requests are bounded like chunks: one request never
        // holds a descriptor and a stream for more than a chunk's worth.
        if len > MAX_CHUNK_REQUEST {
            return refuse(
                ErrorCode::BadRange,
                format!("{len} bytes of {path} in one request is over the limit of {MAX_CHUNK_REQUEST}; ask for chunks"),
            );
        }
        match id.root().join(path.as_str()) {
            Ok(full) => Reply::Data { path: full, offset, len },
            Err(e) => refuse(ErrorCode::BadRequest, e.to_string()),
        }
    }
}

impl ServeView {
    fn unit(&self, id: &GameId, digest: &crate::game::Hash, unit: UnitIdx) -> Reply {
        match self.games.get(id).filter(|g| g.summary.manifest_digest == *digest) {
            Some(game) => game.units.reply(id, unit),
            None => refuse(ErrorCode::UnknownGame, format!("{id} with this manifest is not served here")),
        }
    }

    /// Whether the version of `id` with `digest` is served complete.
    pub fn serves(&self, id: &GameId, digest: &crate::game::Hash) -> bool {
        self.games.get(id).is_some_and(|g| g.summary.manifest_digest == *digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::{FileEntry, Version};

    fn view() -> ServeView {
        let id = GameId::new("g").unwrap();
        let manifest = Manifest {
            version: Version::new("1").unwrap(),
            files: vec![
                FileEntry { path: RelPath::new("data").unwrap(), kind: EntryKind::Dir, size: 0, chunks: vec![], hash: [0; 32] },
                FileEntry {
                    path: RelPath::new("data/a.bin").unwrap(),
                    kind: EntryKind::File,
                    size: 100,
                    chunks: vec![[0; 32]],
                    hash: [0; 32],
                },
                FileEntry {
                    path: RelPath::new("version.ini").unwrap(),
                    kind: EntryKind::File,
                    size: 1,
                    chunks: vec![[0; 32]],
                    hash: [0; 32],
                },
            ],
        };
        let summary = GameSummary {
            id: id.clone(),
            name: "G".into(),
            version: manifest.version.clone(),
            size: 101,
            file_count: 3,
            manifest_digest: manifest.digest(),
        };
        let mut games = BTreeMap::new();
        games.insert(id, Arc::new(ServedGame::new(summary, manifest)));
        ServeView { catalog: Catalog::default(), games, revision: 1 }
    }

    fn code(r: Reply) -> ErrorCode {
        match r {
            Reply::Message(Response::Error(e)) => e.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn serves_only_manifest_files_within_range() {
        let v = view();
        let g = GameId::new("g").unwrap();
        let p = |s: &str| RelPath::new(s).unwrap();
        assert_eq!(
            v.handle(&Request::GetGameFileChunk { id: g.clone(), path: p("data/a.bin"), offset: 10, len: 90 }),
            Reply::Data { path: p("g/data/a.bin"), offset: 10, len: 90 }
        );
        assert_eq!(
            v.handle(&Request::GetGameFileData { id: g.clone(), path: p("data/a.bin") }),
            Reply::Data { path: p("g/data/a.bin"), offset: 0, len: 100 }
        );
        assert_eq!(
            code(v.handle(&Request::GetGameFileChunk { id: g.clone(), path: p("data/a.bin"), offset: 10, len: 91 })),
            ErrorCode::BadRange
        );
        assert_eq!(
            code(v.handle(&Request::GetGameFileChunk { id: g.clone(), path: p("data/a.bin"), offset: u64::MAX, len: 2 })),
            ErrorCode::BadRange
        );
        assert_eq!(code(v.handle(&Request::GetGameFileData { id: g.clone(), path: p("data") })), ErrorCode::NotInManifest);
        // A whole file over the chunk limit must be asked for in chunks.
        let mut big = v.clone();
        let mut game = (*big.games[&g]).clone();
        let mut manifest = (*game.manifest).clone();
        manifest.files[1].size = MAX_CHUNK_REQUEST + 1;
        game.manifest = Arc::new(manifest);
        big.games.insert(g.clone(), Arc::new(game));
        assert_eq!(code(big.handle(&Request::GetGameFileData { id: g.clone(), path: p("data/a.bin") })), ErrorCode::BadRange);
        assert_eq!(code(v.handle(&Request::GetGameFileData { id: g.clone(), path: p("local/x") })), ErrorCode::NotInManifest);
        assert_eq!(code(v.handle(&Request::GetGameFileData { id: g.clone(), path: p(".lanspread.json") })), ErrorCode::NotInManifest);
        assert_eq!(code(v.handle(&Request::GetGame { id: GameId::new("other").unwrap() })), ErrorCode::UnknownGame);
        assert!(matches!(v.handle(&Request::ListGames), Reply::Message(Response::Games(g)) if g.len() == 1));
    }

    #[test]
    fn units_are_served_only_for_the_same_manifest() {
        let v = view();
        let g = GameId::new("g").unwrap();
        let digest = v.games[&g].summary.manifest_digest;
        let p = |s: &str| RelPath::new(s).unwrap();
        assert_eq!(
            v.handle(&Request::GetUnit { id: g.clone(), digest, unit: UnitIdx(0) }),
            Reply::Pieces {
                pieces: vec![
                    ReadPiece { path: p("g/data/a.bin"), offset: 0, len: 100 },
                    ReadPiece { path: p("g/version.ini"), offset: 0, len: 1 }
                ],
                len: 101
            }
        );
        assert_eq!(code(v.handle(&Request::GetUnit { id: g.clone(), digest, unit: UnitIdx(1) })), ErrorCode::BadRange);
        assert_eq!(code(v.handle(&Request::GetUnit { id: g, digest: [9; 32], unit: UnitIdx(0) })), ErrorCode::UnknownGame);
    }
}
