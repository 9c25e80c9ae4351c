//! Hostile requests against a served MemFs library: every answer is an
//! error or a range inside a manifest file of a served game.
#![no_main]

use lanspread_core::catalog::Catalog;
use lanspread_core::protocol::{Held, Request, Response};
use lanspread_core::scan::Scanner;
use lanspread_core::serve::{Reply, ServeView, ServedGame};
use lanspread_memfs::MemFs;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

fn view() -> &'static ServeView {
    static VIEW: OnceLock<ServeView> = OnceLock::new();
    VIEW.get_or_init(|| {
        let fs = MemFs::new();
        fs.write_file("g/version.ini", b"1.0\n");
        fs.write_file("g/data/a.bin", &[7u8; 3000]);
        fs.write_file("g/local/installed.exe", b"x");
        fs.write_file("g/.lanspread.json", b"{}");
        fs.write_file("other/version.ini", b"1\n");
        let catalog = Catalog::from_toml("[[games]]\nid = \"g\"\nname = \"G\"\n").unwrap();
        let mut scanner = Scanner::default();
        let lib = futures::executor::block_on(scanner.scan_all(&fs, &catalog)).unwrap();
        let mut games = BTreeMap::new();
        for (id, g) in &lib.games {
            if let (Some(s), Some(m)) = (g.summary(&catalog), g.manifest.clone()) {
                games.insert(id.clone(), Arc::new(ServedGame::new(s, m)));
            }
        }
        ServeView { catalog, games, revision: 1 }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = postcard::from_bytes::<Request>(data) else { return };
    let v = view();
    match v.handle(&req) {
        Reply::Message(Response::Error(_)) | Reply::Message(Response::Games(_)) | Reply::Message(Response::Game(_)) => {}
        Reply::Data { path, offset, len } => {
            let (id, rel) = match &req {
                Request::GetGameFileChunk { id, path, .. } | Request::GetGameFileData { id, path } => (id, path),
                _ => panic!("data for a non-data request"),
            };
            let m = &v.games[id].manifest;
            let f = m.file(rel).expect("served a file outside the manifest");
            assert!(offset.checked_add(len).is_some_and(|e| e <= f.size));
            assert!(len <= lanspread_core::protocol::MAX_CHUNK_REQUEST, "an unbounded request");
            assert!(path.starts_with(&id.root()));
        }
        Reply::Pieces { pieces, len } => {
            let Request::GetUnit { id, .. } = &req else { panic!("pieces for a non-unit request") };
            let game = &v.games[id];
            assert_eq!(pieces.iter().map(|p| p.len as u64).sum::<u64>(), len);
            for p in pieces {
                let rel = p.path.strip_prefix(&id.root()).expect("a piece outside the game root");
                let f = game.manifest.file(&rel).expect("served a file outside the manifest");
                assert!((p.offset + p.len as u64) <= f.size);
            }
        }
        // A served game is held whole: its news says so, and names nobody.
        Reply::Message(Response::Have(news)) => {
            let Request::Have { id, digest, .. } = &req else { panic!("have news for a non-have request") };
            assert_eq!(v.games[id].summary.manifest_digest, *digest, "news of a version not served");
            assert_eq!(news.held, Held::All);
            assert!(news.members.is_empty());
        }
        other => panic!("unexpected reply {other:?}"),
    }
});
