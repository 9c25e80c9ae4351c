//! Syscall counts of one run (`strace -c -f`): what each file costs in
//! syncs, opens and thread hand-offs.

use super::measure;
use super::real::Cx;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// The syscalls the report shows, in this order (and the total).
pub const SHOWN: [&str; 6] = ["fsync", "fdatasync", "syncfs", "openat", "openat2", "futex"];

/// Calls per syscall of one traced run.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Calls by syscall name.
    pub calls: BTreeMap<String, u64>,
    /// All calls.
    pub total: u64,
    /// Wall seconds of the traced run (slowed down by tracing).
    pub wall: f64,
}

impl Counts {
    /// Calls of `name` (0 if none).
    pub fn of(&self, name: &str) -> u64 {
        self.calls.get(name).copied().unwrap_or(0)
    }
}

/// One traced run for the report.
pub struct Traced {
    /// What was traced.
    pub what: String,
    /// Its counts, or why there are none.
    pub counts: Result<Counts, String>,
}

/// Runs `cmd` under `strace -c -f` (following every thread and child).
pub fn count(cx: &Cx<'_>, name: &str, cmd: &Command) -> Result<Counts, String> {
    let strace = cx.tools.strace.as_ref().ok_or("strace is not installed")?;
    let out = cx.logs.join(format!("strace-{name}.txt"));
    let mut traced = Command::new(strace);
    traced.args(["-c", "-f", "-o"]).arg(&out).arg("--").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    let f = measure::run_measured(&format!("strace-{name}"), &mut traced, &cx.logs, Duration::from_secs(1800))?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut c = parse(&text);
    c.wall = f.wall;
    Ok(c)
}

/// Parses the table of `strace -c`: a row is `% time, seconds, usecs/call,
/// calls, [errors,] syscall`; the total is the sum of the rows.
fn parse(text: &str) -> Counts {
    let mut c = Counts::default();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(calls)) = (t.last(), t.get(3).and_then(|v| v.parse::<u64>().ok())) else { continue };
        if t.len() < 5 || *name == "total" || t[0].parse::<f64>().is_err() {
            continue;
        }
        *c.calls.entry((*name).to_owned()).or_default() += calls;
        c.total += calls;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_summary() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    \x20 60.00    0.600000          18     33337           fsync\n\
                    \x20 30.00    0.300000           4     71200        12 openat2\n\
                    \x20 10.00    0.100000           0    683000     40000 futex\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    1.000000           1    787537     40012 total\n";
        let c = parse(text);
        assert_eq!((c.of("fsync"), c.of("openat2"), c.of("futex"), c.of("openat")), (33337, 71200, 683000, 0));
        assert_eq!(c.total, 787537);
    }
}
