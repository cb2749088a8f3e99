//! The bench's JSON line, its checks, and what it reads about the machine and the process from /proc.

use std::fmt::Write as _;
use std::fs;

/// One JSON value of the report.
#[derive(Clone, Debug)]
pub enum Value {
    Int(u64),
    Float(f64),
    Text(String),
    Bool(bool),
    Null,
    /// A JSON array (the soak scenario's memory samples).
    List(Vec<Value>),
    /// A JSON object, its keys in order (the fleet scenario's chaos events).
    Object(Vec<(String, Value)>),
}

impl From<Vec<u64>> for Value {
    fn from(values: Vec<u64>) -> Self {
        Value::List(values.into_iter().map(Value::Int).collect())
    }
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        if value.is_finite() { Value::Float(value) } else { Value::Null }
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

impl Value {
    fn write_json(&self, out: &mut String) {
        match self {
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            // Six significant digits (at least one decimal): enough for the figures, without float noise.
            Value::Float(x) => {
                let magnitude = if *x == 0.0 { 0 } else { x.abs().log10().floor() as i32 };
                let decimals = (5 - magnitude).clamp(1, 12) as usize;
                let _ = write!(out, "{x:.decimals$}");
            }
            Value::Text(text) => write_json_string(text, out),
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Null => out.push_str("null"),
            Value::List(values) => {
                out.push('[');
                for (n, value) in values.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    value.write_json(out);
                }
                out.push(']');
            }
            Value::Object(fields) => {
                out.push('{');
                for (n, (key, value)) in fields.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    write_json_string(key, out);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The keys and values of one side of a comparison (ssehub or its baseline), and its failed checks.
#[derive(Default)]
pub struct Figures {
    pub fields: Vec<(&'static str, Value)>,
    pub failures: Vec<String>,
}

impl Figures {
    pub fn put(&mut self, key: &'static str, value: impl Into<Value>) {
        self.fields.push((key, value.into()));
    }

    /// Records a failed check unless `holds`.
    pub fn check(&mut self, holds: bool, failure: impl FnOnce() -> String) {
        if !holds {
            self.failures.push(failure());
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.fields.iter().find(|(k, _)| *k == key).and_then(|(_, v)| match v {
            Value::Int(n) => Some(*n as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        })
    }
}

/// The one JSON line a run prints.
#[derive(Default)]
pub struct Report {
    fields: Vec<(String, Value)>,
    failures: Vec<String>,
}

impl Report {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = value,
            None => self.fields.push((key.to_string(), value)),
        }
    }

    /// Adds one side's figures, each key prefixed by `prefix` (empty for ssehub).
    pub fn add(&mut self, prefix: &str, figures: Figures) {
        for (key, value) in figures.fields {
            self.put(&format!("{prefix}{key}"), value);
        }
        for failure in figures.failures {
            self.failures.push(if prefix.is_empty() { failure } else { format!("{prefix}{failure}") });
        }
    }

    /// Adds the sides a run measured: ssehub's figures under the plain keys
    /// and the baseline's under `baseline_*`; a baseline-only run puts the
    /// baseline's under the plain keys.
    pub fn add_sides(&mut self, ssehub: Option<Figures>, baseline: Option<Figures>) {
        match (ssehub, baseline) {
            (Some(ssehub), baseline) => {
                self.add("", ssehub);
                if let Some(baseline) = baseline {
                    self.add("baseline_", baseline);
                }
            }
            (None, Some(baseline)) => self.add("", baseline),
            (None, None) => {}
        }
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        let mut first = true;
        let ok = ("ok".to_string(), Value::Bool(self.ok()));
        let failures = if self.failures.is_empty() {
            None
        } else {
            Some(("failures".to_string(), Value::Text(self.failures.join("; "))))
        };
        for (key, value) in self.fields.iter().chain(std::iter::once(&ok)).chain(failures.iter()) {
            if !first {
                out.push(',');
            }
            first = false;
            write_json_string(key, &mut out);
            out.push(':');
            value.write_json(&mut out);
        }
        out.push('}');
        out
    }
}

/// `a / b`, or `None` when `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The median of `values` (the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The 1-minute load average from /proc/loadavg.
pub fn load_average_1m() -> Option<f64> {
    fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// The CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
}

/// Online CPU cores as the OS reports them.
pub fn online_cores() -> Option<u64> {
    std::thread::available_parallelism().ok().map(|n| n.get() as u64)
}

/// A `kB` field of /proc/self/status (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field) && line[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Peak resident set size of the process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM")
}

/// Current resident set size (`VmRSS`), in KiB.
pub fn rss_kib() -> Option<u64> {
    status_kib("VmRSS")
}

/// Resets the peak resident set size to the current one (Linux `clear_refs` 5),
/// so that `VmHWM` measures one side of a comparison, not the process so far.
///
/// Heap that earlier sides freed but the allocator kept is returned to the
/// OS first (glibc's `malloc_trim`): it would otherwise count as this side's.
pub fn reset_peak_rss() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Each side's figures over the rounds of a run, and the ratio of each round's pair.
pub struct Rounds {
    pub ssehub: Option<Figures>,
    pub baseline: Option<Figures>,
    /// `pair_ratio` of each round that ran both sides, back to back.
    pub paired_ratios: Vec<f64>,
    /// A second baseline's median round, when the scenario has one (see [`Rounds::run_two`]).
    pub second: Option<Figures>,
    /// `pair_ratio` of ssehub to the second baseline in each round that ran both.
    pub second_paired_ratios: Vec<f64>,
}

impl Rounds {
    /// Runs the sides the command line asks for, `rounds` times, interleaved
    /// (ssehub then baseline in each round, or the reverse with
    /// `--baseline-first`), and keeps each side's median round by `rank_key`.
    pub fn run(
        bench: &crate::Bench,
        rounds: usize,
        rank_key: &'static str,
        ssehub: impl FnMut() -> crate::Result<Figures>,
        baseline: impl FnMut() -> crate::Result<Figures>,
        pair_ratio: impl Fn(&Figures, &Figures) -> Option<f64>,
    ) -> crate::Result<Self> {
        Self::run_two(bench, rounds, rank_key, ssehub, baseline, None::<fn() -> _>, pair_ratio)
    }

    /// As [`run`](Self::run), with a second baseline (if given) run in each
    /// round right after the first (the baselines are one side for
    /// `--baseline`, `--no-baseline` and `--baseline-first`).
    pub fn run_two(
        bench: &crate::Bench,
        rounds: usize,
        rank_key: &'static str,
        mut ssehub: impl FnMut() -> crate::Result<Figures>,
        mut baseline: impl FnMut() -> crate::Result<Figures>,
        mut second: Option<impl FnMut() -> crate::Result<Figures>>,
        pair_ratio: impl Fn(&Figures, &Figures) -> Option<f64>,
    ) -> crate::Result<Self> {
        let sides = bench.cli.sides;
        let (mut ssehub_rounds, mut baseline_rounds, mut paired_ratios) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut second_rounds, mut second_paired_ratios) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let (mut this_ssehub, mut this_baseline, mut this_second) = (None, None, None);
            for run_baseline in if sides.baseline_first() { [true, false] } else { [false, true] } {
                if run_baseline && sides.baseline() {
                    bench.progress(format!("baseline, round {round} of {rounds}"));
                    this_baseline = Some(baseline()?);
                    if let Some(second) = second.as_mut() {
                        bench.progress(format!("second baseline, round {round} of {rounds}"));
                        this_second = Some(second()?);
                    }
                } else if !run_baseline && sides.ssehub() {
                    bench.progress(format!("ssehub, round {round} of {rounds}"));
                    this_ssehub = Some(ssehub()?);
                }
            }
            if let (Some(s), Some(b)) = (&this_ssehub, &this_baseline) {
                paired_ratios.extend(pair_ratio(s, b));
            }
            if let (Some(s), Some(b)) = (&this_ssehub, &this_second) {
                second_paired_ratios.extend(pair_ratio(s, b));
            }
            ssehub_rounds.extend(this_ssehub);
            baseline_rounds.extend(this_baseline);
            second_rounds.extend(this_second);
        }
        Ok(Self {
            ssehub: median_round(ssehub_rounds, rank_key),
            baseline: median_round(baseline_rounds, rank_key),
            paired_ratios,
            second: median_round(second_rounds, rank_key),
            second_paired_ratios,
        })
    }

    /// Puts `ratio` (the median of the paired ratios) and `ratio_of_medians`.
    pub fn put_ratio(&self, report: &mut Report, basis: &str, of_medians: Option<f64>) {
        if self.ssehub.is_some() && self.baseline.is_some() {
            report.put("ratio", (!self.paired_ratios.is_empty()).then(|| median(&self.paired_ratios)));
            report.put("ratio_of_medians", of_medians);
            report.put("ratio_basis", basis);
        }
    }
}

/// The round whose `key` is the median (the lower middle one of an even
/// count), with `rounds`, `<key>_min` and `<key>_max` added, and the
/// failures of every round.
fn median_round(mut rounds: Vec<Figures>, key: &'static str) -> Option<Figures> {
    let count = rounds.len();
    let values: Vec<f64> = rounds.iter().filter_map(|r| r.get(key)).collect();
    let failures: Vec<String> = rounds.iter().flat_map(|r| r.failures.iter().cloned()).collect();
    rounds
        .sort_by(|a, b| a.get(key).unwrap_or(f64::INFINITY).total_cmp(&b.get(key).unwrap_or(f64::INFINITY)));
    let mut middle = rounds.into_iter().nth(count.checked_sub(1)? / 2)?;
    middle.failures = failures;
    middle.failures.dedup();
    if count > 1 {
        middle.put("rounds", count as u64);
        middle.put(min_key(key), values.iter().copied().reduce(f64::min));
        middle.put(max_key(key), values.iter().copied().reduce(f64::max));
    }
    Some(middle)
}

fn min_key(key: &'static str) -> &'static str {
    match key {
        "seconds" => "seconds_min",
        "p99_us" => "p99_us_min",
        _ => "rank_min",
    }
}

fn max_key(key: &'static str) -> &'static str {
    match key {
        "seconds" => "seconds_max",
        "p99_us" => "p99_us_max",
        _ => "rank_max",
    }
}
