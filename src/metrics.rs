//! Prometheus text exposition: histograms, and the standard `process_*`
//! gauges read from `/proc/self`. Owns no state of the node; the HTTP
//! side renders what the node and its handlers recorded.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Latency buckets, in seconds: 50 µs (a lease read) to 10 s (a write
/// behind a stalled disk).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Entries per durable write: how well group commit batches.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// One histogram's counts (not cumulative; rendering adds them up).
#[derive(Clone, Debug)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Buckets {
    pub fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        if let Some(slot) = self.bounds.iter().position(|&bound| value <= bound) {
            self.counts[slot] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    pub fn observe_duration(&mut self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// Adds another histogram of the same buckets (shards merging).
    pub fn merge(&mut self, other: &Buckets) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` is either empty
    /// or `key="value",` pairs ending in a comma.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// A histogram shared between threads that record rarely (once per
/// durable write): one lock per observation is cheap there.
#[derive(Debug)]
pub struct Histogram(Mutex<Buckets>);

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Mutex::new(Buckets::new(bounds)))
    }

    pub fn observe(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(value);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    pub fn snapshot(&self) -> Buckets {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The standard process metrics (as the Prometheus client libraries
/// export them), from `/proc/self`; a file that cannot be read leaves
/// its metric out rather than report a made-up value.
pub fn render_process(out: &mut String, start_time_unix: u64) {
    let page = rustix::param::page_size() as f64;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut fields = statm.split_whitespace().map(|f| f.parse::<f64>().ok());
        if let (Some(Some(size)), Some(Some(resident))) = (fields.next(), fields.next()) {
            header(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
            );
            let _ = writeln!(out, "process_virtual_memory_bytes {}", size * page);
            header(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {}", resident * page);
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces and ends at
        // the last ')'): utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            let per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
            header(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
            );
            let _ = writeln!(
                out,
                "process_cpu_seconds_total {}",
                (user + system) / per_second
            );
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        header(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {}", entries.count());
    }
    if let Some(max) = max_open_files() {
        header(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
    header(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {start_time_unix}");
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let mut b = Buckets::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.5, 7.0] {
            b.observe(v);
        }
        let mut other = Buckets::new(&[1.0, 2.0]);
        other.observe(1.0);
        b.merge(&other);
        let mut out = String::new();
        b.render(&mut out, "x", "route=\"ids\",");
        assert_eq!(
            out,
            "x_bucket{route=\"ids\",le=\"1\"} 2\nx_bucket{route=\"ids\",le=\"2\"} 4\n\
             x_bucket{route=\"ids\",le=\"+Inf\"} 5\nx_sum{route=\"ids\"} 11.5\nx_count{route=\"ids\"} 5\n"
        );
        let mut out = String::new();
        Buckets::new(&[1.0]).render(&mut out, "y", "");
        assert!(out.ends_with("y_sum 0\ny_count 0\n"), "{out}");
    }

    #[test]
    fn process_metrics_come_from_proc() {
        let mut out = String::new();
        render_process(&mut out, 5);
        for name in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds 5",
        ] {
            assert!(out.contains(name), "{name} missing in\n{out}");
        }
    }
}
