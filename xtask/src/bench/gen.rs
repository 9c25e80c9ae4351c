//! Deterministic benchmark inputs: the mixed game of `shared/bench/make-game.py`
//! (adapted: same layout and sizes, content from a seeded splitmix64 stream
//! instead of Python's `random`, so no Python is needed), a tree shaped like
//! a real game ([`Shape`]), a library of many small games, and tree
//! statistics and comparison.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// splitmix64: fast, seeded, incompressible enough for transfer benchmarks.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from a string.
    pub fn new(seed: &str) -> Rng {
        // FNV-1a of the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A number in `(0, 1]`.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal deviate (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

fn write_random(path: &Path, size: u64, rng: &mut Rng, buf: &mut [u8]) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// A generated game inside a game directory.
#[derive(Debug, Clone)]
pub struct Game {
    /// The game directory (holds `catalog.toml` and the root `ID/`).
    pub dir: PathBuf,
    /// Game id.
    pub id: String,
    /// Bytes of all files of the root.
    pub bytes: u64,
    /// Files in the root.
    pub files: u64,
}

impl Game {
    /// The game root.
    pub fn root(&self) -> PathBuf {
        self.dir.join(&self.id)
    }
}

/// The catalog entry for a game id.
pub fn catalog_entry(id: &str) -> String {
    format!("[[games]]\nid = \"{id}\"\nname = \"Benchmark game {id}\"\n\n")
}

/// The mixed game of make-game.py at `scale` (1.0 ≈ 2 GB: one 1 GiB file,
/// 20 × 40 MiB, 2000 files of 1–128 KiB in nested folders, version.ini),
/// in `data/ID-sSCALE/ID`, generated once and reused while its marker exists.
pub fn mixed_game(data: &Path, id: &str, scale: f64) -> Result<Game, String> {
    let dir = data.join(format!("{id}-s{scale}"));
    let marker = data.join(format!("{id}-s{scale}.done"));
    if !marker.is_file() {
        super::log(&format!("bench: generating game {id} (scale {scale}) in {}", dir.display()));
        super::measure::fresh_dir(&dir)?;
        let root = dir.join(id);
        let mut rng = Rng::new(&format!("lanspread-bench-{id}"));
        let mut buf = vec![0u8; 8 << 20];
        write_random(&root.join(format!("{id}.eti")), ((1u64 << 30) as f64 * scale) as u64, &mut rng, &mut buf)?;
        for i in 0..20 {
            write_random(&root.join("data").join(format!("pak{i:02}.bin")), ((40u64 << 20) as f64 * scale) as u64, &mut rng, &mut buf)?;
        }
        let small = ((2000.0 * scale.min(1.0)) as u64).max(1);
        for i in 0..small {
            let sub = root.join("assets").join(format!("d{:02}", i % 37)).join(format!("e{}", i % 11));
            let size = rng.range(1 << 10, 128 << 10);
            write_random(&sub.join(format!("a{i:04}.dat")), size, &mut rng, &mut buf)?;
        }
        std::fs::write(root.join("version.ini"), "[version]\nversion=20260101\n").map_err(|e| format!("version.ini: {e}"))?;
        std::fs::write(dir.join("catalog.toml"), catalog_entry(id)).map_err(|e| format!("catalog.toml: {e}"))?;
        std::fs::write(&marker, "done\n").map_err(|e| format!("{}: {e}", marker.display()))?;
    }
    let (files, bytes) = tree_totals(&dir.join(id))?;
    Ok(Game { dir, id: id.to_owned(), bytes, files })
}

/// The shape of a generated game tree, after real game data: thousands of
/// small scripts, configs and images (sizes log-normal), a long tail of a
/// few large music or video files, a few hundred directories, some empty
/// files, and a few symbolic links that point outside the game (dangling
/// once unpacked, as in Debian's game data packages).
#[derive(Debug, Clone)]
pub struct Shape {
    /// Regular files in all (body, tail and empty ones).
    pub files: usize,
    /// Median size of a body file, bytes.
    pub median: f64,
    /// σ of the natural log of the body sizes.
    pub sigma: f64,
    /// Largest body file, bytes.
    pub cap: u64,
    /// Files of the long tail.
    pub tail: usize,
    /// Their sizes, log-uniform in `lo..hi` bytes.
    pub tail_range: (u64, u64),
    /// Directories besides the root.
    pub dirs: usize,
    /// Dangling symbolic links.
    pub symlinks: usize,
    /// Empty files.
    pub empty: usize,
}

impl Shape {
    /// At scale 1 about 16,000 files and 190 MB: body sizes log-normal
    /// around 4 KiB (σ 1.2, at most 4 MiB), 6 tail files of 2–24 MiB, 320
    /// directories, 4 dangling symlinks, 16 empty files. Smaller scales
    /// shrink the counts and the tail.
    pub fn real_game(scale: f64) -> Shape {
        let n = |v: f64| ((v * scale).round() as usize).max(1);
        let tail = |mib: u64| (((mib << 20) as f64 * scale.min(1.0)) as u64).max(256 << 10);
        Shape {
            files: n(16_000.0),
            median: 4096.0,
            sigma: 1.2,
            cap: 4 << 20,
            tail: n(6.0),
            tail_range: (tail(2), tail(24)),
            dirs: n(320.0).max(8),
            symlinks: n(4.0),
            empty: n(16.0),
        }
    }

    /// A name that changes with the shape (for cached trees).
    pub fn name(&self) -> String {
        format!(
            "f{}-m{}-s{}-t{}x{}-{}-d{}-l{}-e{}",
            self.files,
            self.median as u64,
            (self.sigma * 100.0) as u64,
            self.tail,
            self.tail_range.0,
            self.tail_range.1,
            self.dirs,
            self.symlinks,
            self.empty
        )
    }
}

/// `dirs` directory paths (the root first), a random tree at most 5 deep.
fn shaped_dirs(rng: &mut Rng, dirs: usize) -> Vec<PathBuf> {
    const WORDS: [&str; 12] =
        ["data", "images", "sounds", "music", "maps", "scripts", "units", "fonts", "lang", "shaders", "models", "campaigns"];
    let mut out = vec![PathBuf::new()];
    for i in 0..dirs {
        let parent = loop {
            let p = &out[rng.range(0, out.len() as u64 - 1) as usize];
            if p.components().count() < 5 {
                break p.clone();
            }
        };
        out.push(parent.join(format!("{}{i:03}", WORDS[rng.range(0, WORDS.len() as u64 - 1) as usize])));
    }
    out
}

fn extension(size: u64) -> &'static str {
    match size {
        0..=1023 => "cfg",
        1024..=8191 => "lua",
        8192..=65535 => "png",
        65536..=1048575 => "webp",
        _ => "ogg",
    }
}

/// Every regular file of a shaped tree: (relative path, size).
fn shaped_files(rng: &mut Rng, shape: &Shape, dirs: &[PathBuf]) -> Vec<(PathBuf, u64)> {
    let pick = |rng: &mut Rng| dirs[rng.range(0, dirs.len() as u64 - 1) as usize].clone();
    let body = shape.files.saturating_sub(shape.tail + shape.empty);
    let mut files = Vec::with_capacity(shape.files);
    for i in 0..body {
        let size = (shape.median * (shape.sigma * rng.normal()).exp()).round().clamp(1.0, shape.cap as f64) as u64;
        files.push((pick(rng).join(format!("f{i:05}.{}", extension(size))), size));
    }
    let (lo, hi) = ((shape.tail_range.0.max(1) as f64).ln(), (shape.tail_range.1.max(1) as f64).ln());
    for i in 0..shape.tail {
        let size = (lo + (hi - lo) * rng.unit()).exp() as u64;
        files.push((pick(rng).join(format!("track{i:02}.ogg")), size));
    }
    for i in 0..shape.empty {
        files.push((pick(rng).join(format!("empty{i:02}.txt")), 0));
    }
    files
}

/// Writes a tree of `shape` into `dir`, the same bytes for the same `seed`;
/// returns (regular files, bytes).
pub fn shaped_tree(dir: &Path, shape: &Shape, seed: &str) -> Result<(u64, u64), String> {
    let mut rng = Rng::new(seed);
    let dirs = shaped_dirs(&mut rng, shape.dirs);
    for d in &dirs {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("{}: {e}", dir.join(d).display()))?;
    }
    let files = shaped_files(&mut rng, shape, &dirs);
    let mut buf = vec![0u8; 8 << 20];
    for (path, size) in &files {
        write_random(&dir.join(path), *size, &mut rng, &mut buf)?;
    }
    for i in 0..shape.symlinks {
        let link = dir.join(&dirs[rng.range(0, dirs.len() as u64 - 1) as usize]).join(format!("font{i}.ttf"));
        let target = format!("../../../../usr/share/fonts/truetype/lanspread-missing-{i}.ttf");
        std::os::unix::fs::symlink(&target, &link).map_err(|e| format!("{}: {e}", link.display()))?;
    }
    Ok((files.len() as u64, files.iter().map(|f| f.1).sum()))
}

/// A game of `shape` in `data/ID-SHAPE/ID` (with `version.ini` and the
/// catalog), generated once and reused while its marker exists.
pub fn shaped_game(data: &Path, id: &str, shape: &Shape) -> Result<Game, String> {
    let name = format!("{id}-{}", shape.name());
    let dir = data.join(&name);
    let marker = data.join(format!("{name}.done"));
    if !marker.is_file() {
        super::log(&format!("bench: generating game {id} ({} files) in {}", shape.files, dir.display()));
        super::measure::fresh_dir(&dir)?;
        shaped_tree(&dir.join(id), shape, &format!("lanspread-shaped-{id}"))?;
        finish_game(&dir, id, "20260101", &marker)?;
    }
    let (files, bytes) = tree_totals(&dir.join(id))?;
    Ok(Game { dir, id: id.to_owned(), bytes, files })
}

/// Writes `ID/version.ini`, the catalog and the marker of a generated game.
pub fn finish_game(dir: &Path, id: &str, version: &str, marker: &Path) -> Result<(), String> {
    std::fs::write(dir.join(id).join("version.ini"), format!("[version]\nversion={version}\n")).map_err(|e| format!("version.ini: {e}"))?;
    std::fs::write(dir.join("catalog.toml"), catalog_entry(id)).map_err(|e| format!("catalog.toml: {e}"))?;
    std::fs::write(marker, "done\n").map_err(|e| format!("{}: {e}", marker.display()))
}

/// A game `id` that ships the regular files of `src`'s root (`version.ini`
/// aside) as one zip, `ID/ID.zip`, beside its `version.ini`: the usual
/// layout of a game here. Generated once, like the others.
pub fn zipped_game(data: &Path, src: &Game, id: &str) -> Result<Game, String> {
    let name = format!("{id}-of-{}", src.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let dir = data.join(&name);
    let marker = data.join(format!("{name}.done"));
    if !marker.is_file() {
        super::log(&format!("bench: zipping {} into {}", src.root().display(), dir.display()));
        super::measure::fresh_dir(&dir.join(id))?;
        let files = regular_files(&src.root(), &["local", "version.ini"])?;
        super::zip::write_stored(&src.root(), &files, &dir.join(id).join(format!("{id}.zip")))?;
        finish_game(&dir, id, "20260101", &marker)?;
    }
    let (files, bytes) = tree_totals(&dir.join(id))?;
    Ok(Game { dir, id: id.to_owned(), bytes, files })
}

/// The regular files under `root` (relative, sorted), skipping top-level
/// dot-files and the top-level names in `skip`.
pub fn regular_files(root: &Path, skip: &[&str]) -> Result<Vec<PathBuf>, String> {
    Ok(listing(root, skip)?.into_keys().collect())
}

/// A library of many games with small files.
#[derive(Debug, Clone)]
pub struct Library {
    /// The game directory.
    pub dir: PathBuf,
    /// Game ids.
    pub ids: Vec<String>,
    /// Files (all games).
    pub files: u64,
    /// Bytes (all games).
    pub bytes: u64,
}

/// `games` games of `files_per_game` files each (version.ini included),
/// file sizes uniform in 1..=2×`avg` bytes, 50 files per folder.
pub fn library(data: &Path, games: usize, files_per_game: usize, avg: u64) -> Result<Library, String> {
    let name = format!("lib-{games}x{files_per_game}-{avg}");
    let dir = data.join(&name);
    let marker = data.join(format!("{name}.done"));
    let ids: Vec<String> = (0..games).map(|g| format!("sg{g:03}")).collect();
    if !marker.is_file() {
        super::log(&format!("bench: generating library {name} ({} files) in {}", games * files_per_game, dir.display()));
        super::measure::fresh_dir(&dir)?;
        let mut rng = Rng::new(&name);
        let mut buf = vec![0u8; (2 * avg as usize).max(1)];
        let mut catalog = String::new();
        for id in &ids {
            let root = dir.join(id);
            for i in 0..files_per_game.saturating_sub(1) {
                let size = rng.range(1, (2 * avg).max(1));
                write_random(&root.join(format!("d{}", i / 50)).join(format!("f{i:04}.bin")), size, &mut rng, &mut buf)?;
            }
            std::fs::write(root.join("version.ini"), "[version]\nversion=1.0\n").map_err(|e| format!("version.ini: {e}"))?;
            catalog.push_str(&catalog_entry(id));
        }
        std::fs::write(dir.join("catalog.toml"), catalog).map_err(|e| format!("catalog.toml: {e}"))?;
        std::fs::write(&marker, "done\n").map_err(|e| format!("{}: {e}", marker.display()))?;
    }
    let (mut files, mut bytes) = (0, 0);
    for id in &ids {
        let (f, b) = tree_totals(&dir.join(id))?;
        files += f;
        bytes += b;
    }
    Ok(Library { dir, ids, files, bytes })
}

/// Top-level names a listing skips by default: the installation.
const SKIP: &[&str] = &["local"];

/// Relative path → size of every regular file under `root`, skipping
/// top-level dot-files (a peer's own bookkeeping), the top-level names in
/// `skip`, and symbolic links (lanspread neither serves nor creates them).
pub(crate) fn listing(root: &Path, skip: &[&str]) -> Result<BTreeMap<PathBuf, u64>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = e.file_name();
            let lossy = name.to_string_lossy();
            if rel.as_os_str().is_empty() && (lossy.starts_with('.') || skip.contains(&lossy.as_ref())) {
                continue;
            }
            let meta = std::fs::symlink_metadata(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?;
            if meta.is_dir() {
                stack.push(rel.join(&name));
            } else if !meta.file_type().is_symlink() {
                out.insert(rel.join(&name), meta.len());
            }
        }
    }
    Ok(out)
}

/// (files, bytes) under `root` (regular files; `local/` and top-level dot-files aside).
pub fn tree_totals(root: &Path) -> Result<(u64, u64), String> {
    let l = listing(root, SKIP)?;
    Ok((l.len() as u64, l.values().sum()))
}

/// (directories, symbolic links) under `root`.
pub fn dirs_and_links(root: &Path) -> Result<(u64, u64), String> {
    let (mut dirs, mut links) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let t = e.file_type().map_err(|err| format!("{}: {err}", e.path().display()))?;
            if t.is_symlink() {
                links += 1;
            } else if t.is_dir() {
                dirs += 1;
                stack.push(e.path());
            }
        }
    }
    Ok((dirs, links))
}

/// Checks that `got` holds the files of `want` with the same sizes, and
/// (if `content`) the same bytes.
pub fn compare(want: &Path, got: &Path, content: bool) -> Result<(), String> {
    compare_except(want, got, content, SKIP)
}

/// [`compare`], skipping the top-level names in `skip` on both sides.
pub fn compare_except(want: &Path, got: &Path, content: bool, skip: &[&str]) -> Result<(), String> {
    let (a, b) = (listing(want, skip)?, listing(got, skip)?);
    if a != b {
        let missing = a.keys().filter(|k| !b.contains_key(*k)).count();
        let extra = b.keys().filter(|k| !a.contains_key(*k)).count();
        let differ = a.iter().filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v)).count();
        return Err(format!(
            "{} is not a copy of {}: {missing} missing, {extra} unexpected, {differ} of another size",
            got.display(),
            want.display()
        ));
    }
    if content {
        let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        for p in a.keys() {
            let open = |r: &Path| File::open(r.join(p)).map_err(|e| format!("{}: {e}", r.join(p).display()));
            let (mut fa, mut fb) = (open(want)?, open(got)?);
            loop {
                let na = crate::read_full(&mut fa, &mut ba).map_err(|e| format!("{}: {e}", p.display()))?;
                let nb = crate::read_full(&mut fb, &mut bb).map_err(|e| format!("{}: {e}", p.display()))?;
                if na != nb || ba[..na] != bb[..nb] {
                    return Err(format!("{} differs from the source", got.join(p).display()));
                }
                if na == 0 {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Reads every file under `root` once (puts a warm source in the page cache).
pub fn read_all(root: &Path) -> Result<(), String> {
    let mut buf = vec![0u8; 1 << 20];
    for p in listing(root, SKIP)?.keys() {
        let mut f = File::open(root.join(p)).map_err(|e| format!("{}: {e}", p.display()))?;
        while crate::read_full(&mut f, &mut buf).map_err(|e| format!("{}: {e}", p.display()))? > 0 {}
    }
    Ok(())
}

/// Hard-links the game `g` into a fresh game directory `dir` (with its
/// catalog): a second seeder directory without copying the bytes.
pub fn link_copy(g: &Game, dir: &Path) -> Result<(), String> {
    super::measure::fresh_dir(dir)?;
    super::measure::run(std::process::Command::new("cp").arg("-al").arg(g.root()).arg(dir))?;
    std::fs::copy(g.dir.join("catalog.toml"), dir.join("catalog.toml")).map_err(|e| format!("catalog.toml: {e}"))?;
    Ok(())
}
