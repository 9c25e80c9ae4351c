//! Rows, `target/bench/latest.json` and `BENCHMARKS.md`.

use super::tools::Tools;
use super::Opts;
use serde_json::json;
use std::process::Command;

/// One figure: ours against a baseline measured in the same run.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// What was measured.
    pub case: String,
    /// Our median, seconds (or the unit named in `case`).
    pub ours_s: Option<f64>,
    /// What we compare with.
    pub baseline: String,
    /// The baseline's median, same unit.
    pub baseline_s: Option<f64>,
    /// ours / baseline.
    pub ratio: Option<f64>,
    /// Anything needed to read the figure.
    pub notes: String,
    /// The issue's target for the ratio, if any (report only).
    pub target: Option<Target>,
}

/// A target on the ratio.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// ratio ≤ x.
    AtMost(f64),
}

impl Target {
    fn show(self) -> String {
        match self {
            Target::AtMost(x) => format!("≤ {x:.2}"),
        }
    }
    fn met(self, r: f64) -> bool {
        match self {
            Target::AtMost(x) => r <= x,
        }
    }
}

impl Row {
    /// A row comparing two medians.
    pub fn cmp(case: &str, ours: f64, baseline: &str, base: f64, notes: String) -> Row {
        let ratio = if ours.is_finite() && base.is_finite() && base > 0.0 { Some(ours / base) } else { None };
        Row {
            case: case.to_owned(),
            ours_s: ours.is_finite().then_some(ours),
            baseline: baseline.to_owned(),
            baseline_s: base.is_finite().then_some(base),
            ratio,
            notes,
            target: None,
        }
    }

    /// With a target on the ratio.
    pub fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    /// A case or baseline that could not be measured.
    pub fn failed(case: &str, why: &str) -> Row {
        Row {
            case: case.to_owned(),
            baseline: "-".into(),
            notes: format!("NOT MEASURED: {}", why.lines().next().unwrap_or(why)),
            ..Row::default()
        }
    }

    /// Whether the target is met (None without a target or a ratio).
    pub fn met(&self) -> Option<bool> {
        Some(self.target?.met(self.ratio?))
    }
}

/// What a case hands back.
#[derive(Debug, Default)]
pub struct Section {
    /// Its rows.
    pub rows: Vec<Row>,
    /// Sentences for the reading.
    pub reading: Vec<String>,
    /// `## ...` markdown with the per-run details.
    pub details: String,
}

/// Everything of one invocation.
pub struct Report {
    /// All rows.
    pub rows: Vec<Row>,
    reading: Vec<String>,
    details: Vec<String>,
    header: Vec<String>,
    /// Total seconds.
    pub elapsed: f64,
}

fn sh_line(prog: &str, args: &[&str]) -> String {
    Command::new(prog).args(args).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).map(|l| l.split_once(':').map_or("", |x| x.1).trim().to_owned()))
        .unwrap_or_default()
}

/// BENCHMARKS.md: the generated part plus the hand-written `xtask/bench/NOTES.md`.
pub fn with_notes(root: &std::path::Path, body: &str) -> String {
    let notes = root.join("xtask").join("bench").join("NOTES.md");
    let mut md = body.to_owned();
    if let Ok(text) = std::fs::read_to_string(&notes) {
        md.push_str(&text);
    }
    md
}

/// `1.234` or `-`.
pub fn f3(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

impl Report {
    /// Collects the machine description.
    pub fn new(opts: &Opts, tools: &Tools) -> Report {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let mem_gib = proc_field("/proc/meminfo", "MemTotal").split_whitespace().next().and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0)
            / 1048576.0;
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())))
            .unwrap_or_default();
        let commit = sh_line("git", &["-C", &opts.root.to_string_lossy(), "rev-parse", "--short", "HEAD"]);
        let dirty = !sh_line("git", &["-C", &opts.root.to_string_lossy(), "status", "--porcelain", "--untracked-files=no"]).is_empty();
        let mut header = vec![
            format!("- **Date:** {}", sh_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
            format!(
                "- **Machine:** {cores} cores ({}), {mem_gib:.0} GiB RAM, Linux {}, {os}; load average at start {}",
                proc_field("/proc/cpuinfo", "model name"),
                sh_line("uname", &["-r"]),
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            ),
            format!(
                "- **Code:** {}",
                if opts.bin_given {
                    format!("binary given with `--bin` ({}); workspace at commit {commit}", opts.bin.display())
                } else {
                    format!(
                        "`{}` built from the workspace at commit {commit}{}",
                        opts.bin.display(),
                        if dirty { " plus uncommitted changes" } else { "" }
                    )
                }
            ),
            format!(
                "- **Run:** `cargo xtask bench{}`; {} counted run(s) per figure after {} warm-up, median reported; page cache {}",
                if opts.quick { " --quick" } else { "" },
                opts.runs,
                opts.warmup,
                if opts.cold {
                    "dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every timed run: cold source for every tool"
                } else {
                    "**warm** for every tool (not dropped)"
                }
            ),
            format!("- **Tools:** {}", tools.versions.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")),
        ];
        for m in &tools.missing {
            header.push(format!("- **Missing:** {m}"));
        }
        Report { rows: Vec::new(), reading: Vec::new(), details: Vec::new(), header, elapsed: 0.0 }
    }

    /// Adds a case's results.
    pub fn add(&mut self, s: Section) {
        self.rows.extend(s.rows);
        self.reading.extend(s.reading);
        if !s.details.is_empty() {
            self.details.push(s.details);
        }
    }

    /// `latest.json`.
    pub fn json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| json!({ "case": r.case, "ours_s": r.ours_s, "baseline": r.baseline, "baseline_s": r.baseline_s, "ratio": r.ratio, "notes": r.notes }))
            .collect();
        serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
    }

    /// The results table.
    fn table(&self) -> String {
        let mut t =
            String::from("| case | ours | baseline | baseline | ratio | target | met | notes |\n|---|---:|---|---:|---:|---|---|---|\n");
        for r in &self.rows {
            let met = match r.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {met} | {} |\n",
                r.case,
                f3(r.ours_s),
                r.baseline,
                f3(r.baseline_s),
                r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
                r.target.map_or(String::new(), Target::show),
                r.notes.replace('|', "\\|")
            ));
        }
        t
    }

    /// BENCHMARKS.md without the hand-written notes.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# Benchmarks\n\n");
        md.push_str(
            "Generated by `cargo xtask bench` (xtask/src/bench.rs); regenerate it rather than editing it. The hand-written \
             profiling findings at the end come from `xtask/bench/NOTES.md`. Every figure is a median, and every comparison \
             is a ratio against a baseline measured **in the same run**: the machine is shared with other engineers' builds, \
             so absolute seconds are noisy. Times are in seconds unless the case names another unit; MB = 10^6 bytes.\n\n",
        );
        md.push_str(&self.header.join("\n"));
        md.push_str(&format!("\n- **Duration of this run:** {:.0} s\n\n", self.elapsed));
        md.push_str("## Results\n\n");
        md.push_str(&self.table());
        md.push_str("\n## Reading\n\n");
        for s in &self.reading {
            md.push_str(&format!("- {s}\n"));
        }
        md.push('\n');
        for d in &self.details {
            md.push_str(d);
            md.push('\n');
        }
        md
    }

    /// A plain-text table for the terminal.
    pub fn summary_table(&self) -> String {
        let mut s = format!("{:<58} {:>9} {:<28} {:>9} {:>7}  {}\n", "case", "ours", "baseline", "base", "ratio", "target");
        for r in &self.rows {
            let tgt = match (r.target, r.met()) {
                (Some(t), Some(m)) => format!("{} {}", t.show(), if m { "met" } else { "MISSED" }),
                (Some(t), None) => t.show(),
                _ => String::new(),
            };
            s.push_str(&format!(
                "{:<58} {:>9} {:<28} {:>9} {:>7}  {tgt}\n",
                r.case,
                f3(r.ours_s),
                r.baseline,
                f3(r.baseline_s),
                r.ratio.map_or("-".into(), |x| format!("{x:.2}"))
            ));
        }
        s
    }
}
