//! Case 7: rows, reading and details of the real-shaped games.

use super::install::InstallResult;
use super::measure;
use super::real::{Cx, Runs, Sample, Tool, TreeResult, TRANSPORT};
use super::report::{Row, Section, Target};
use super::strace::{Traced, SHOWN};

/// A tree's result, or (label, why it was skipped).
pub type TreeOutcome = Result<TreeResult, (String, String)>;

/// Issue 11 targets on durable ratios: (vs rsync, vs cp -a).
fn targets(label: &str) -> (f64, f64) {
    match label {
        "2gb" => (0.85, 1.0),
        _ => (1.0, 1.5),
    }
}

fn title(label: &str) -> &'static str {
    match label {
        "many" => "many-file",
        "deb" => "Debian game",
        "2gb" => "2 GB game",
        _ => "tree",
    }
}

fn runs_of(runs: &[Runs], tool: Tool) -> Option<&Runs> {
    runs.iter().find(|r| r.tool == tool)
}

/// Median of `f` over the counted samples of `tool` (NaN without any).
fn med(runs: &[Runs], tool: Tool, f: fn(&Sample) -> f64) -> f64 {
    runs_of(runs, tool).map_or(f64::NAN, |r| measure::median(&r.samples.iter().map(f).collect::<Vec<_>>()))
}

fn why_not(runs: &[Runs], tool: Tool) -> String {
    runs_of(runs, tool).and_then(|r| r.problem.clone()).unwrap_or_else(|| "no counted run".into())
}

fn x(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "n/a".into()
    }
}

/// Durable and returned rows of `ours` against each baseline in `bases`.
fn ratio_rows(name: &str, runs: &[Runs], ours: Tool, bases: &[(Tool, f64)], note: &str) -> Vec<Row> {
    if runs_of(runs, ours).is_none_or(|r| r.samples.is_empty()) {
        return vec![Row::failed(&format!("7 {name}: {}", ours.short()), &why_not(runs, ours))];
    }
    let mut rows = Vec::new();
    for (base, target) in bases {
        let b = med(runs, *base, Sample::durable);
        let row = Row::cmp(
            &format!("7 {name}: {} vs {}, durable", ours.short(), base.short()),
            med(runs, ours, Sample::durable),
            &format!("{} + sync", base.name()),
            b,
            note.to_owned(),
        );
        rows.push(if b.is_finite() { row.target(Target::AtMost(*target)) } else { Row::failed(&row.case, &why_not(runs, *base)) });
    }
    for (base, _) in bases {
        let ret = |s: &Sample| s.returned;
        rows.push(Row::cmp(
            &format!("7 {name}: {} vs {}, command returned", ours.short(), base.short()),
            med(runs, ours, ret),
            base.name(),
            med(runs, *base, ret),
            "until the command returns, no sync: only lanspread is durable at that point".into(),
        ));
    }
    rows
}

fn rss_rows(name: &str, runs: &[Runs], ours: Tool, seeder: bool) -> Vec<Row> {
    let Some(r) = runs_of(runs, ours).filter(|r| !r.samples.is_empty()) else { return Vec::new() };
    let max = |f: fn(&Sample) -> u64| r.samples.iter().map(f).max().unwrap_or(0) as f64 / 1024.0;
    let mut who = vec![(if seeder { "downloader" } else { "process" }, max(|s| s.rss))];
    if seeder {
        who.push(("seeder", max(|s| s.peer_rss)));
    }
    who.into_iter()
        .map(|(w, mib)| {
            Row::cmp(
                &format!("7 {name}: {w} peak RSS (MiB)"),
                mib,
                "target 100 MiB",
                100.0,
                format!("unit MiB, not s; max over {} runs of VmHWM", r.samples.len()),
            )
            .target(Target::AtMost(1.0))
        })
        .collect()
}

fn tree_rows(t: &TreeResult) -> Vec<Row> {
    let (tr, tc) = targets(&t.label);
    let note = format!(
        "{} files, {:.0} MB; median of {}",
        t.game.files,
        t.game.bytes as f64 / 1e6,
        runs_of(&t.runs, Tool::Get).map_or(0, |r| r.samples.len())
    );
    let mut rows = ratio_rows(title(&t.label), &t.runs, Tool::Get, &[(Tool::Rsync, tr), (Tool::Cp, tc)], &note);
    rows.extend(rss_rows(title(&t.label), &t.runs, Tool::Get, true));
    rows
}

fn tree_reading(t: &TreeResult) -> String {
    let (tr, tc) = targets(&t.label);
    let g = |tool, f| med(&t.runs, tool, f);
    let (ours, rs, cp) = (g(Tool::Get, Sample::durable), g(Tool::Rsync, Sample::durable), g(Tool::Cp, Sample::durable));
    if !ours.is_finite() {
        return format!("Case 7, {}: `lanspread get` not measured: {}", title(&t.label), first_line(&why_not(&t.runs, Tool::Get)));
    }
    let ret = |s: &Sample| s.returned;
    format!(
        "Case 7, {} ({} files, {:.0} MB): durable, `get` took {ours:.2} s = {} rsync + sync (target ≤ {tr:.2}) and {} `cp -a` + sync (target ≤ {tc:.2}); \
         until the commands returned: {} rsync, {} `cp -a`.",
        title(&t.label),
        t.game.files,
        t.game.bytes as f64 / 1e6,
        x(ours / rs),
        x(ours / cp),
        x(g(Tool::Get, ret) / g(Tool::Rsync, ret)),
        x(g(Tool::Get, ret) / g(Tool::Cp, ret)),
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Per-tool table rows (median (min–max) of returned, sync, durable; CPU; RSS).
fn runs_table(what: &str, bytes: u64, runs: &[Runs]) -> String {
    let mut d = String::new();
    for r in runs {
        if r.samples.is_empty() {
            let why = r.problem.as_deref().map_or("no counted run", first_line).replace('|', "\\|");
            d.push_str(&format!("| {what} | {} | not measured: {why} | | | | | | |\n", r.tool.name()));
            continue;
        }
        let col = |f: fn(&Sample) -> f64| r.samples.iter().map(f).collect::<Vec<_>>();
        let spread = |v: Vec<f64>| {
            let (lo, hi) = measure::span(&v);
            format!("{:.3} ({lo:.3}–{hi:.3})", measure::median(&v))
        };
        let durable = measure::median(&col(Sample::durable));
        let peer = r.samples.iter().map(|s| s.peer_rss).max().unwrap_or(0);
        d.push_str(&format!(
            "| {what} | {} | {} | {:.3} | {} | {:.0} | {:.2} | {} | {:.0}{} |\n",
            r.tool.name(),
            spread(col(|s| s.returned)),
            measure::median(&col(|s| s.sync)),
            spread(col(Sample::durable)),
            bytes as f64 / durable / 1e6,
            measure::median(&col(|s| s.cpu)),
            if r.tool == Tool::Get || r.tool == Tool::Rsync { format!("{:.2}", measure::median(&col(|s| s.peer_cpu))) } else { "-".into() },
            r.samples.iter().map(|s| s.rss).max().unwrap_or(0) as f64 / 1024.0,
            if peer > 0 { format!(" / {:.0}", peer as f64 / 1024.0) } else { String::new() },
        ));
    }
    d
}

const TABLE_HEAD: &str = "| tree | tool | returned: median (min–max) | sync after | durable: median (min–max) | durable MB/s | CPU s | CPU s serving side | peak RSS MiB (timed / seeder) |\n|---|---|---|---:|---|---:|---:|---:|---|\n";

fn intro(cx: &Cx<'_>) -> String {
    let o = cx.opts;
    format!(
        "## Case 7: games shaped like real ones, durable\n\n\
         Every run of every tool: a fresh empty destination; `sync`; the page cache {}; the source (and the `lanspread` binary) read once; \
         so every tool reads a warm source and writes a cold destination. Then the tool runs, then `sync`. *Returned* = until the command \
         returns; *durable* = until the `sync` after it returns (lanspread fsyncs before it reports success, so its `sync` finds little to do; \
         rsync and `cp -a` leave their writes in the page cache). {} counted run(s) per tool after {} warm-up, the tools taking turns in an order \
         rotated every round. Tools: `cp -a` (local), an rsync daemon on 127.0.0.1 (`rsync -a rsync://…` into an empty folder), and \
         `lanspread serve` + `lanspread get ID --no-install --json --peer 127.0.0.1:PORT --no-mdns` ({TRANSPORT}). Every `lanspread` process runs \
         with `RLIMIT_NOFILE` {} (soft and hard, `prlimit --nofile=N:N`), like a stock machine. Each copy is compared with the source (sizes; \
         bytes in the first round); symbolic links are not compared (lanspread neither serves nor creates them). Peak RSS is VmHWM (the \
         seeder's reset before each run). Trees:\n\n\
         - **many**: generated like a real game's data (`gen::Shape::real_game`{}): sizes log-normal around 4 KiB (σ 1.2, at most 4 MiB), a tail \
         of a few files up to 24 MiB, a few hundred directories, a few empty files and dangling symlinks; seeded, the same bytes every run;\n\
         - **deb**: the data of a real game, a Debian package (`apt-get download`, cached in `target/bench/deb/`; `dpkg-deb -x`; a \
         `version.ini` beside it);\n\
         - **2gb**: the mixed game of case 1.\n\n",
        if o.cold { "dropped (`echo 3 > /proc/sys/vm/drop_caches`)" } else { "**not** dropped (not permitted here, or `--warm`)" },
        o.runs,
        o.warmup,
        if o.nofile == 0 { "unchanged".to_owned() } else { format!("at {}", o.nofile) },
        if o.quick { ", scale 0.05 in --quick" } else { "" },
    )
}

fn tree_table(trees: &[TreeOutcome]) -> String {
    let mut d = String::from(
        "| tree | game id | files | bytes | directories | symlinks | seeder start-up (scan + hash) |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for t in trees {
        match t {
            Ok(t) => d.push_str(&format!(
                "| {} | `{}` | {} | {} | {} | {} | {} |\n",
                t.label,
                t.game.id,
                t.game.files,
                t.game.bytes,
                t.dirs,
                t.links,
                t.seeder_startup.map_or("failed".into(), |s| format!("{s:.2} s"))
            )),
            Err((label, why)) => d.push_str(&format!("| {label} | skipped: {} | | | | | |\n", first_line(why).replace('|', "\\|"))),
        }
    }
    d
}

fn install_part(sec: &mut Section, install: Option<&Result<InstallResult, String>>) -> String {
    let r = match install {
        None => return String::new(),
        Some(Err(e)) => {
            sec.rows.push(Row::failed("7 zip install", e));
            return format!("Install: not measured: {}\n\n", first_line(e));
        }
        Some(Ok(r)) => r,
    };
    let name = "zip install";
    let note = format!("one zip of {} files, {:.0} MB (stored)", r.entries, r.game.bytes as f64 / 1e6);
    sec.rows.extend(ratio_rows(name, &r.runs, Tool::Install, &[(Tool::Unzip, 1.5)], &note));
    sec.rows.extend(rss_rows(name, &r.runs, Tool::Install, false));
    let (ours, base) = (med(&r.runs, Tool::Install, Sample::durable), med(&r.runs, Tool::Unzip, Sample::durable));
    sec.reading.push(format!(
        "Case 7, install of the zipped many-file tree: `lanspread install` {ours:.2} s, durable = {} `unzip` + sync (target ≤ 1.50).",
        x(ours / base)
    ));
    format!(
        "Install: the many-file tree (without `version.ini`) as one stored zip of {} entries ({} bytes unpacked) beside a `version.ini`; \
         `lanspread install` (unpacks into `local/`, durable when it returns) against `unzip -q -o ZIP -d EMPTY`, both followed by `sync`; \
         the scan index is built once before, as after a download; `local/` is removed before each run.\n\n{TABLE_HEAD}{}\n",
        r.entries,
        r.unpacked,
        runs_table("install", r.unpacked, &r.runs)
    )
}

fn strace_part(straces: &[Traced], have: bool) -> String {
    if !have {
        return "Syscall counts: not measured, `strace` is not installed (Debian package strace).\n\n".into();
    }
    let mut d = format!(
        "Syscall counts (`strace -c -f`, one uncounted run each, same limits and cache protocol; tracing slows the run):\n\n| process | wall s (traced) | {} | total |\n|---|---:|{}---:|\n",
        SHOWN.join(" | "),
        "---:|".repeat(SHOWN.len())
    );
    for t in straces {
        match &t.counts {
            Ok(c) => {
                let cells: Vec<String> = SHOWN.iter().map(|s| c.of(s).to_string()).collect();
                d.push_str(&format!("| {} | {:.2} | {} | {} |\n", t.what, c.wall, cells.join(" | "), c.total));
            }
            Err(e) => {
                d.push_str(&format!("| {} | failed: {} |{} |\n", t.what, first_line(e).replace('|', "\\|"), " |".repeat(SHOWN.len())))
            }
        }
    }
    d.push('\n');
    d
}

/// The section of case 7.
pub fn section(cx: &Cx<'_>, trees: &[TreeOutcome], install: Option<&Result<InstallResult, String>>, straces: &[Traced]) -> Section {
    let mut sec = Section::default();
    let mut runs = String::from(TABLE_HEAD);
    for t in trees {
        match t {
            Ok(t) => {
                sec.rows.extend(tree_rows(t));
                sec.reading.push(tree_reading(t));
                runs.push_str(&runs_table(&t.label, t.game.bytes, &t.runs));
            }
            Err((label, why)) => sec.rows.push(Row::failed(&format!("7 {}", title(label)), &format!("skipped: {why}"))),
        }
    }
    let mut d = intro(cx);
    d.push_str(&tree_table(trees));
    d.push('\n');
    d.push_str(&runs);
    d.push('\n');
    d.push_str(&install_part(&mut sec, install));
    d.push_str(&strace_part(straces, cx.tools.strace.is_some()));
    sec.details = d;
    sec
}
