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

/// The results of one case (1 also holds 5 and 6), with when and on what they were measured.
#[derive(Debug, Clone, Default)]
pub struct CaseResult {
    /// "1", "2", "3" or "4".
    pub key: String,
    /// Date, code and mode of the run that measured it.
    pub when: String,
    /// Rows.
    pub rows: Vec<Row>,
    /// Sentences for the reading.
    pub reading: Vec<String>,
    /// Details markdown.
    pub details: String,
}

/// Everything of one invocation, plus the cases kept from an earlier run
/// of the same mode when only some cases ran (`--only`).
pub struct Report {
    /// Per case, sorted by key.
    pub cases: Vec<CaseResult>,
    header: Vec<String>,
    when: String,
    mode: String,
    /// Total seconds.
    pub elapsed: f64,
}

fn row_json(r: &Row) -> serde_json::Value {
    json!({ "case": r.case, "ours_s": r.ours_s, "baseline": r.baseline, "baseline_s": r.baseline_s, "ratio": r.ratio, "notes": r.notes })
}

fn row_from(v: &serde_json::Value) -> Row {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Row {
        case: s("case"),
        ours_s: v["ours_s"].as_f64(),
        baseline: s("baseline"),
        baseline_s: v["baseline_s"].as_f64(),
        ratio: v["ratio"].as_f64(),
        notes: s("notes"),
        target: v["target_at_most"].as_f64().map(Target::AtMost),
    }
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
                "- **Last run:** `cargo xtask bench{}{}`; {} counted run(s) per figure after {} warm-up, median reported; page cache {}",
                if opts.quick { " --quick" } else { "" },
                if opts.only == super::ALL_CASES {
                    String::new()
                } else {
                    format!(" --only {}", opts.only.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
                },
                opts.runs,
                opts.warmup,
                if opts.cold {
                    if opts.quick {
                        "dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every timed run: cold source for every tool"
                    } else {
                        "dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every timed run (cold source for every tool); case 1 is also measured warm"
                    }
                } else {
                    "**warm** for every tool (not dropped)"
                }
            ),
            format!("- **Tools:** {}", tools.versions.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")),
        ];
        for m in &tools.missing {
            header.push(format!("- **Missing:** {m}"));
        }
        let when = format!(
            "{}, commit {commit}{}, {}{}",
            sh_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            if opts.bin_given {
                " (binary given with --bin)"
            } else if dirty {
                " + uncommitted changes"
            } else {
                ""
            },
            if opts.quick { "--quick" } else { "full" },
            if opts.cold { "" } else { ", warm cache" }
        );
        let mode = if opts.quick { "quick" } else { "full" }.to_owned();
        Report { cases: Vec::new(), header, when, mode, elapsed: 0.0 }
    }

    /// Adds (or replaces) the results of case `key`.
    pub fn add(&mut self, key: &str, s: Section) {
        self.cases.retain(|c| c.key != key);
        self.cases.push(CaseResult { key: key.to_owned(), when: self.when.clone(), rows: s.rows, reading: s.reading, details: s.details });
        self.cases.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Keeps the cases of an earlier run (same mode) that this run did not measure.
    pub fn merge_previous(&mut self, path: &std::path::Path) {
        let Some(prev) = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) else {
            return;
        };
        if prev["mode"].as_str() != Some(self.mode.as_str()) {
            return;
        }
        for c in prev["cases"].as_array().into_iter().flatten() {
            let key = c["key"].as_str().unwrap_or_default();
            if key.is_empty() || self.cases.iter().any(|x| x.key == key) {
                continue;
            }
            let strings =
                |k: &str| c[k].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default();
            self.cases.push(CaseResult {
                key: key.to_owned(),
                when: c["when"].as_str().unwrap_or_default().to_owned(),
                rows: c["rows"].as_array().map(|a| a.iter().map(row_from).collect()).unwrap_or_default(),
                reading: strings("reading"),
                details: c["details"].as_str().unwrap_or_default().to_owned(),
            });
        }
        self.cases.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Everything needed to re-render or merge later (`target/bench/cases.json`).
    pub fn state(&self) -> String {
        let cases: Vec<serde_json::Value> = self
            .cases
            .iter()
            .map(|c| {
                let rows: Vec<serde_json::Value> = c
                    .rows
                    .iter()
                    .map(|r| {
                        let mut v = row_json(r);
                        v["target_at_most"] = json!(r.target.map(|Target::AtMost(x)| x));
                        v
                    })
                    .collect();
                json!({ "key": c.key, "when": c.when, "rows": rows, "reading": c.reading, "details": c.details })
            })
            .collect();
        let v = json!({ "mode": self.mode, "header": self.header, "elapsed": self.elapsed, "cases": cases });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }

    /// A report read back from [`Report::state`] (for `bench --render`).
    pub fn from_state(text: &str) -> Result<Report, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("cases.json: {e}"))?;
        let header = v["header"].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        let mut r = Report {
            cases: Vec::new(),
            header,
            when: String::new(),
            mode: v["mode"].as_str().unwrap_or_default().to_owned(),
            elapsed: v["elapsed"].as_f64().unwrap_or(0.0),
        };
        let tmp = std::env::temp_dir().join(format!("lsb-cases-{}.json", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        r.merge_previous(&tmp);
        let _ = std::fs::remove_file(&tmp);
        Ok(r)
    }

    /// All rows, in case order.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.cases.iter().flat_map(|c| c.rows.iter())
    }

    /// `latest.json`: one row per figure.
    pub fn json(&self) -> String {
        let rows: Vec<serde_json::Value> = self.rows().map(row_json).collect();
        serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
    }

    /// The results table.
    fn table(&self) -> String {
        let mut t =
            String::from("| case | ours | baseline | baseline | ratio | target | met | notes |\n|---|---:|---|---:|---:|---|---|---|\n");
        for r in self.rows() {
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
        md.push_str(&format!("\n- **Duration of the last run:** {:.0} s\n", self.elapsed));
        let mut whens: Vec<&str> = self.cases.iter().map(|c| c.when.as_str()).collect();
        whens.dedup();
        if whens.len() > 1 {
            md.push_str("- **Measured in more than one run** (`--only` re-measured some cases; each case comes from one run):\n");
            for c in &self.cases {
                let name = match c.key.as_str() {
                    "1" => "cases 1, 5, 6",
                    "2" => "case 2",
                    "3" => "case 3",
                    "4" => "case 4",
                    "7" => "case 7",
                    "8" => "case 8",
                    _ => "case ?",
                };
                md.push_str(&format!("  - {name}: {}\n", c.when));
            }
        }
        md.push_str("\n## Results\n\n");
        md.push_str(&self.table());
        md.push_str("\n## Reading\n\n");
        for s in self.cases.iter().flat_map(|c| c.reading.iter()) {
            md.push_str(&format!("- {s}\n"));
        }
        md.push('\n');
        for c in &self.cases {
            if !c.details.is_empty() {
                md.push_str(&c.details);
                md.push('\n');
            }
        }
        md
    }

    /// A plain-text table for the terminal.
    pub fn summary_table(&self) -> String {
        let mut s = format!("{:<58} {:>9} {:<28} {:>9} {:>7}  {}\n", "case", "ours", "baseline", "base", "ratio", "target");
        for r in self.rows() {
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
