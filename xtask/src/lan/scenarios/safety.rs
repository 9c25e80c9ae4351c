//! (e) Issue 12, items 1 and 2, with the real binary.
//!
//! User data (h1, local operations; h3 and h4 over the LAN): a `local/`
//! without the `.lanspread_owned` marker is neither updated nor deleted
//! without `--adopt`. `install` and `uninstall` refuse and change nothing.
//! `install --adopt` moves the user's files out to the kept directory and
//! then carries back into the new `local/` those the archive does not also
//! produce; a clashing one stays in `.lanspread-kept/<id>-<time>/` (the new
//! version wins). `uninstall` then moves every user file there and deletes
//! the rest. A `get` onto a root with a hand-made `local/` downloads the
//! game but its install is refused, `local/` untouched; `get --adopt`
//! installs and carries the save.
//!
//! Names (h2 seeds, h1 fetches into an empty directory): a game holding
//! `data/A.pak` and `data/a.pak`, or `LOCAL/x.dll`, is not advertised; `get`
//! of it finds no holder and writes nothing; the seeder's clean game is
//! fetched byte-identical.

use super::super::net;
use super::super::procs::Procs;
use super::super::tree;
use super::{finish_get, peer_hex, verify, Cx, Host};
use crate::bench::{gen, zip};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Installed and uninstalled by hand on h1.
const USER: &str = "safe-user";
/// Seeded by h2; fetched by h3 (hand-made `local/`) and h4 (`--adopt`).
const CLEAN: &str = "safe-clean";
/// `data/A.pak` and `data/a.pak`: one file on a case-insensitive disk.
const CASE: &str = "safe-case";
/// `LOCAL/x.dll`: on a case-insensitive disk, a write into the installed game.
const CTL: &str = "safe-ctl";
/// A hand-made `local/`: a save, a settings file, and a binary at a path the
/// archive also produces (the clash).
const HAND: [(&str, &[u8]); 3] = [
    ("saves/slot1.sav", b"player save: level 7, 1234 gold\n"),
    ("options.ini", b"[video]\nfullscreen=1\n"),
    ("bin/game.exe", b"a game binary the user installed by hand\n"),
];
/// Longest any one command of this scenario may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Port `serve` listens on by default.
const PORT: u16 = 47800;

/// The scenario.
pub(super) fn safety(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    let local = user_data(cx, procs)?;
    let lan = over_lan(cx, procs)?;
    Ok(format!("{local}; {lan}"))
}

// ---- game roots ---------------------------------------------------------

/// What `ID.zip` holds: the files an install produces.
fn archive(id: &str) -> Vec<(String, Vec<u8>)> {
    let mut level = vec![0u8; 192 << 10];
    gen::Rng::new(id).fill(&mut level);
    vec![
        ("bin/game.exe".into(), format!("{id}: the game binary, version 1.0\n").into_bytes()),
        ("data/level1.dat".into(), level),
        ("readme.txt".into(), format!("{id}: read me\n").into_bytes()),
    ]
}

fn write_files<'a>(dir: &Path, files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<(), String> {
    for (rel, data) in files {
        let p = dir.join(rel);
        let parent = p.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        std::fs::write(&p, data).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// Every game of the scenario, so any host may ask for any of them.
fn catalog(h: &Host) -> Result<(), String> {
    let text: String = [USER, CLEAN, CASE, CTL].iter().map(|id| gen::catalog_entry(id)).collect();
    let path = h.games.join("catalog.toml");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A downloaded root on `h`: `version.ini` and `files`.
fn game_root<'a>(h: &Host, id: &str, files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<PathBuf, String> {
    let root = h.root(id);
    let ini: (&str, &[u8]) = ("version.ini", b"[version]\nversion=1.0\n");
    write_files(&root, files.into_iter().chain([ini]))?;
    Ok(root)
}

/// A downloaded root holding `ID.zip` of [`archive`].
fn zipped(cx: &Cx, h: &Host, id: &str) -> Result<PathBuf, String> {
    let src = cx.dir.join(format!("src-h{}-{id}", h.i));
    let files = archive(id);
    write_files(&src, files.iter().map(|(p, d)| (p.as_str(), d.as_slice())))?;
    let list: Vec<PathBuf> = files.iter().map(|(p, _)| PathBuf::from(p)).collect();
    let root = game_root(h, id, [])?;
    zip::write_stored(&src, &list, &root.join(format!("{id}.zip")))?;
    Ok(root)
}

// ---- looking at trees ---------------------------------------------------

/// Every entry under a directory: `None` for a directory, else the file's
/// bytes and mtime (a rewrite with the same bytes still shows).
type Snap = BTreeMap<PathBuf, Option<(Vec<u8>, SystemTime)>>;

fn err(p: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

fn snapshot(dir: &Path) -> Result<Snap, String> {
    let mut out = Snap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(err(&d))? {
            let p = e.map_err(err(&d))?.path();
            let meta = std::fs::symlink_metadata(&p).map_err(err(&p))?;
            let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
            if meta.is_dir() {
                stack.push(p);
                out.insert(rel, None);
            } else {
                out.insert(rel, Some((std::fs::read(&p).map_err(err(&p))?, meta.modified().map_err(err(&p))?)));
            }
        }
    }
    Ok(out)
}

/// `dir` is exactly as `before` (same entries, bytes and mtimes).
fn unchanged(before: &Snap, dir: &Path, what: &str) -> Result<(), String> {
    let after = snapshot(dir)?;
    let keys: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    let diff: Vec<String> = keys.into_iter().filter(|k| before.get(*k) != after.get(*k)).map(|k| k.display().to_string()).collect();
    if diff.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {} changed: {}", dir.display(), diff.join(", ")))
    }
}

/// The file `p` holds exactly `want`.
fn expect(p: &Path, want: &[u8]) -> Result<(), String> {
    match std::fs::read(p) {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(format!("{}: {} bytes, not the expected {} bytes", p.display(), got.len(), want.len())),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn absent(p: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => Err(format!("{} exists; it should not", p.display())),
        Err(_) => Ok(()),
    }
}

// ---- running the binary -------------------------------------------------

/// A finished command.
struct Ran {
    ok: bool,
    out: String,
    err: String,
}

/// Waits for process `p` to end (its stderr is read from its log).
fn finish(cx: &Cx, procs: &mut Procs, p: usize) -> Result<Ran, String> {
    let proc = procs.get(p);
    let status = proc.wait(TIMEOUT)?;
    let err = std::fs::read_to_string(cx.dir.join("logs").join(format!("{}.stderr", proc.name))).unwrap_or_default();
    Ok(Ran { ok: status.success(), out: proc.stdout(), err })
}

/// Runs `lanspread ARGS` in `h`'s namespace as `hI-LABEL`, to its end.
fn run(cx: &Cx, procs: &mut Procs, h: &Host, label: &str, args: &[String]) -> Result<Ran, String> {
    let p = procs.spawn(&format!("h{}-{label}", h.i), &h.ns(), &cx.bin, args, &[("LANSPREAD_CONFIG_DIR", &h.config)])?;
    finish(cx, procs, p)
}

/// `lanspread OP GAME --games DIR [extra…]` on `h`.
fn game_op(cx: &Cx, procs: &mut Procs, h: &Host, label: &str, op: &str, game: &str, extra: &[&str]) -> Result<Ran, String> {
    let mut args = cx.args(op, h, None, extra);
    args.insert(1, game.to_owned());
    run(cx, procs, h, label, &args)
}

/// Starts `get GAME [--adopt]` on `h` as `hI-get-GAME[-adopt]`, dialing
/// `peer` only (no mDNS: no waiting on discovery), giving up after `wait` s
/// without a holder.
fn get(cx: &Cx, procs: &mut Procs, h: &Host, game: &str, peer: &str, wait: u32, adopt: bool) -> Result<usize, String> {
    let wait = wait.to_string();
    let mut args = cx.args("get", h, None, &["--json", "--no-mdns", "--peer", peer, "--wait", &wait]);
    args.insert(1, game.to_owned());
    if adopt {
        args.push("--adopt".to_owned());
    }
    let name = format!("h{}-get-{game}{}", h.i, if adopt { "-adopt" } else { "" });
    procs.spawn(&name, &h.ns(), &cx.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h.config)])
}

fn succeeded(r: &Ran, what: &str) -> Result<(), String> {
    if r.ok {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", r.err.trim()))
    }
}

/// `r` failed with an error that names `--adopt`; returns that line.
fn refused(r: &Ran, what: &str) -> Result<String, String> {
    match r.err.lines().find(|l| l.contains("--adopt")) {
        Some(l) if !r.ok => Ok(l.trim().to_owned()),
        _ => Err(format!("{what}: expected a failure naming --adopt (exit ok: {}); stderr: {}", r.ok, r.err.trim())),
    }
}

/// The kept directory a local operation reported ("… were moved to PATH").
fn reported_kept(r: &Ran, h: &Host, what: &str) -> Result<PathBuf, String> {
    let line = r.out.lines().find(|l| l.contains("were moved to ")).ok_or_else(|| format!("{what}: no kept directory reported"))?;
    let path = PathBuf::from(line.rsplit("were moved to ").next().unwrap_or_default().trim());
    let base = h.games.canonicalize().map_err(|e| format!("{}: {e}", h.games.display()))?.join(".lanspread-kept");
    let named = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{USER}-")));
    if path.parent() != Some(base.as_path()) || !named {
        return Err(format!("{what}: kept directory {} is not {}/{USER}-<time>", path.display(), base.display()));
    }
    Ok(path)
}

fn json(r: &Ran, what: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(&r.out).map_err(|e| format!("{what}: not JSON ({e}): {}", r.out))
}

/// The row of game `id` in a `games`/`status` JSON listing.
fn row<'a>(v: &'a serde_json::Value, id: &str) -> Result<&'a serde_json::Value, String> {
    v.as_array().and_then(|rows| rows.iter().find(|r| r["id"].as_str() == Some(id))).ok_or_else(|| format!("{id} is not listed: {v}"))
}

// ---- item 1 by hand -------------------------------------------------------

/// Item 1 on h1 with local operations: refusals, adopt, uninstall.
fn user_data(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    let h = cx.host(1)?;
    catalog(&h)?;
    let root = zipped(cx, &h, USER)?;
    write_files(&root.join("local"), HAND)?;
    // Without --adopt both refuse, and not one byte or mtime of the root
    // changes (install of an existing local/ runs as an update).
    let before = snapshot(&root)?;
    let mut said = String::new();
    for op in ["install", "uninstall"] {
        let r = game_op(cx, procs, &h, &format!("{op}-refused"), op, USER, &[])?;
        said = refused(&r, &format!("h1 `{op}` of a hand-made local/"))?;
        unchanged(&before, &root, &format!("h1 refused {op}"))?;
    }
    absent(&h.games.join(".lanspread-kept"))?;
    eprintln!("  h1: install and uninstall of a hand-made local/ refused, root unchanged: {said}");
    let first = adopt_install(cx, procs, &h, &root)?;
    let second = uninstall(cx, procs, &h, &root, &first)?;
    Ok(format!(
        "h1: refused without --adopt (root unchanged); --adopt carried the save into local/ and kept the clashing bin/game.exe in {}; \
         uninstall kept the save in {}",
        name(&first),
        name(&second)
    ))
}

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `install --adopt`: the archive's files are installed over the adopted
/// tree; the save and settings (paths the archive does not produce) are
/// carried into the new `local/`; the user's `bin/game.exe` clashes with the
/// archive's, so the new version wins and the user's copy stays kept.
fn adopt_install(cx: &Cx, procs: &mut Procs, h: &Host, root: &Path) -> Result<PathBuf, String> {
    let r = game_op(cx, procs, h, "install-adopt", "install", USER, &["--adopt"])?;
    succeeded(&r, "h1 `install --adopt`")?;
    let local = root.join("local");
    if !local.join(".lanspread_owned").is_file() {
        return Err(format!("h1 `install --adopt`: {} has no marker", local.display()));
    }
    for (p, data) in archive(USER) {
        expect(&local.join(p), &data)?;
    }
    for (p, data) in &HAND[..2] {
        expect(&local.join(p), data)?;
    }
    let kept = reported_kept(&r, h, "h1 `install --adopt`")?;
    expect(&kept.join(HAND[2].0), HAND[2].1)?;
    eprintln!("  h1: install --adopt: save and settings carried into local/, clashing bin/game.exe kept in {}", kept.display());
    Ok(kept)
}

/// `uninstall` (the marker is there now: no --adopt): `local/` is gone;
/// the save and settings are in a new kept directory; nothing the archive
/// produced was kept (the kept directories hold the user's three files
/// only); the downloaded files stay.
fn uninstall(cx: &Cx, procs: &mut Procs, h: &Host, root: &Path, first: &Path) -> Result<PathBuf, String> {
    let r = game_op(cx, procs, h, "uninstall", "uninstall", USER, &[])?;
    succeeded(&r, "h1 `uninstall`")?;
    absent(&root.join("local"))?;
    let kept = reported_kept(&r, h, "h1 `uninstall`")?;
    if kept == first {
        return Err(format!("h1 `uninstall` reused the kept directory {}", kept.display()));
    }
    for (p, data) in &HAND[..2] {
        expect(&kept.join(p), data)?;
    }
    let all = snapshot(&h.games.join(".lanspread-kept"))?;
    let files: Vec<&Vec<u8>> = all.values().flatten().map(|(data, _)| data).collect();
    if files.len() != HAND.len() || !files.iter().all(|d| HAND.iter().any(|(_, want)| d.as_slice() == *want)) {
        return Err(format!("h1: .lanspread-kept should hold the user's 3 files only: {:?}", all.keys().collect::<Vec<_>>()));
    }
    expect(&root.join("version.ini"), b"[version]\nversion=1.0\n")?;
    eprintln!("  h1: uninstall: local/ gone, save and settings in {}", kept.display());
    Ok(kept)
}

// ---- items 1 and 2 over the LAN -----------------------------------------

/// h2 seeds CLEAN, CASE and CTL; h3 and h4 get CLEAN onto hand-made
/// `local/`s (without and with --adopt) while h1 tries the bad games.
fn over_lan(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    let (h2, h3, h4) = (cx.host(2)?, cx.host(3)?, cx.host(4)?);
    // h1 with an empty game directory: anything written there shows.
    let hn = cx.host_with(1, "games-names")?;
    for h in [&h2, &h3, &h4, &hn] {
        catalog(h)?;
    }
    seed(cx, &h2)?;
    let status = seeder_status(cx, procs, &h2)?;
    let seeder = serve(cx, procs, &h2)?;
    let peer = format!("{}:{PORT}", net::host_ip(h2.i));
    write_files(&h3.root(CLEAN).join("local"), HAND)?;
    write_files(&h4.root(CLEAN).join("local"), HAND[..1].iter().copied())?;
    let local3 = snapshot(&h3.root(CLEAN).join("local"))?;
    let g3 = get(cx, procs, &h3, CLEAN, &peer, 20, false)?;
    let g4 = get(cx, procs, &h4, CLEAN, &peer, 20, true)?;
    let names = bad_names(cx, procs, &hn, &peer, &seeder)?;
    let refused = get_refused(cx, procs, g3, &h2, &h3, &local3)?;
    let adopted = get_adopted(procs, g4, &h2, &h4)?;
    Ok(format!("{status}; {names}; {refused}; {adopted}"))
}

/// h2's games: CLEAN (a zip), CASE (`data/A.pak` + `data/a.pak`), CTL (`LOCAL/x.dll`).
fn seed(cx: &Cx, h: &Host) -> Result<(), String> {
    zipped(cx, h, CLEAN)?;
    let (upper, lower): (&[u8], &[u8]) = (b"upper-case pak\n", b"lower-case pak\n");
    game_root(h, CASE, [("data/A.pak", upper), ("data/a.pak", lower)])?;
    let dll: &[u8] = b"would land in local/ on NTFS or APFS\n";
    game_root(h, CTL, [("LOCAL/x.dll", dll)])?;
    Ok(())
}

/// h2's `status --json`: CASE and CTL are downloaded (version 1.0) but not
/// shared (no manifest, size 0), and their rows say why ("not shared: ...
/// case-insensitive ..."); CLEAN is shared.
fn seeder_status(cx: &Cx, procs: &mut Procs, h: &Host) -> Result<String, String> {
    let r = run(cx, procs, h, "status", &cx.args("status", h, None, &["--json"]))?;
    succeeded(&r, "h2 `status --json`")?;
    let v = json(&r, "h2 `status --json`")?;
    for id in [CASE, CTL] {
        let g = row(&v, id)?;
        if g["local_version"].as_str() != Some("1.0") || g["size"].as_u64() != Some(0) || g["shared"].as_bool() != Some(false) {
            return Err(format!("h2 status: {id} should be downloaded but not shared: {g}"));
        }
        let said = g["problems"].as_array().is_some_and(|ps| ps.iter().any(|p| p.as_str().is_some_and(|p| p.contains("not shared"))));
        if !said {
            return Err(format!("h2 status: {id} does not say why it is not shared: {g}"));
        }
    }
    if row(&v, CLEAN)?["shared"].as_bool() != Some(true) {
        return Err(format!("h2 status: {CLEAN} should be shared: {}", row(&v, CLEAN)?));
    }
    Ok("h2 status says the bad games are not shared, and why".into())
}

/// `lanspread serve` on `h` (no mDNS: the others dial it); its peer id.
fn serve(cx: &Cx, procs: &mut Procs, h: &Host) -> Result<String, String> {
    let name = format!("h{}-serve", h.i);
    let args = cx.args("serve", h, None, &["--no-mdns"]);
    let p = procs.spawn(&name, &h.ns(), &cx.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h.config)])?;
    let line = procs.get(p).wait_line("serving ", Duration::from_secs(20))?;
    let id = line.rsplit(" as ").next().map(str::trim).unwrap_or_default().to_lowercase();
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{name}: cannot read the peer id from {line:?}"));
    }
    eprintln!("  {name}: {line}");
    Ok(id)
}

/// Item 2 from a downloader with an empty game directory: `games` shows
/// CLEAN held by the seeder (so the seeder was reached and listed) and
/// CASE and CTL held by nobody; `get` of each then fails with "no peer
/// offers", and the directory holds nothing but lanspread's own top-level
/// files (catalog, lock, scan index): no game root at all.
fn bad_names(cx: &Cx, procs: &mut Procs, h: &Host, peer: &str, seeder: &str) -> Result<String, String> {
    let args = cx.args("games", h, None, &["--json", "--no-mdns", "--peer", peer, "--wait", "2"]);
    let r = run(cx, procs, h, "games", &args)?;
    succeeded(&r, "h1 `games`")?;
    let v = json(&r, "h1 `games --json`")?;
    let holders =
        |id: &str| row(&v, id).map(|g| g["peers_with_latest"].as_array().map(|a| a.iter().filter_map(peer_hex).collect::<Vec<_>>()));
    if holders(CLEAN)? != Some(vec![seeder.to_owned()]) {
        return Err(format!("h1 `games`: {CLEAN} should be held by h2 ({seeder}): {}", row(&v, CLEAN)?));
    }
    for bad in [CASE, CTL] {
        if holders(bad)?.is_some_and(|p| !p.is_empty()) {
            return Err(format!("h1 `games`: h2 advertises {bad}: {}", row(&v, bad)?));
        }
        let p = get(cx, procs, h, bad, peer, 3, false)?;
        let r = finish(cx, procs, p)?;
        if r.ok || !r.err.contains("no peer on the LAN offers") {
            return Err(format!("h1 `get {bad}`: expected \"no peer on the LAN offers\"; exit ok {}; stderr: {}", r.ok, r.err.trim()));
        }
    }
    only_own_files(&h.games)?;
    eprintln!("  h1: h2 advertises {CLEAN} only; `get` of {CASE} and {CTL} found no holder and wrote nothing");
    Ok(format!("{CASE} and {CTL} not advertised, `get` of them fails and writes nothing"))
}

/// `games` holds only files of lanspread's own (no directory: no root).
fn only_own_files(games: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(games).map_err(|e| format!("{}: {e}", games.display()))?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let own = n == "catalog.toml" || n.starts_with(".lanspread");
        if !own || e.file_type().map_or(true, |t| !t.is_file()) {
            return Err(format!("{}: unexpected {n:?} after failed gets", games.display()));
        }
    }
    Ok(())
}

/// h3's `get` without --adopt onto a hand-made `local/`: the download
/// completes (byte-identical); the install the runtime runs after it is
/// refused (NotOwned, so `get` exits 1 with "install of … failed … --adopt");
/// `local/` is exactly as the user left it and nothing was kept.
fn get_refused(cx: &Cx, procs: &mut Procs, g: usize, seeder: &Host, h: &Host, local: &Snap) -> Result<String, String> {
    let r = finish(cx, procs, g)?;
    let said = refused(&r, "h3 `get` onto a hand-made local/")?;
    if !said.contains(&format!("install of {CLEAN} failed")) {
        return Err(format!("h3 `get`: the refusal should come from the install after the download: {said}"));
    }
    let (files, _) = tree::compare(&seeder.root(CLEAN), &h.root(CLEAN))?;
    unchanged(local, &h.root(CLEAN).join("local"), "h3 `get` without --adopt")?;
    absent(&h.games.join(".lanspread-kept"))?;
    eprintln!("  h3: get downloaded {files} files byte-identical, refused to install: {said}");
    Ok("h3 get: downloaded, install refused, local/ unchanged".to_owned())
}

/// h4's `get --adopt`: downloaded byte-identical and installed over the
/// adopted `local/`, the save carried into it.
fn get_adopted(procs: &mut Procs, g: usize, seeder: &Host, h: &Host) -> Result<String, String> {
    let sum = finish_get(procs, g, TIMEOUT)?;
    let detail = verify(seeder, h, CLEAN, &sum)?;
    let local = h.root(CLEAN).join("local");
    expect(&local.join(HAND[0].0), HAND[0].1)?;
    for (p, data) in archive(CLEAN) {
        expect(&local.join(p), &data)?;
    }
    eprintln!("  h4: get --adopt: {detail}; the save was carried");
    Ok(format!("h4 get --adopt: {detail}, save carried"))
}
