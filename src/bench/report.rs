//! Summaries of a benchmark run: throughput, latency percentiles and resident memory.
//!
//! Plain arithmetic over timings; reads `/proc` for memory. Depends on nothing but `run`'s
//! output types.

use std::fmt;

use super::run::RunOutput;

/// Resident memory of a process, in bytes, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    pub current: u64,
    /// The high-water mark since the process started.
    pub peak: u64,
}

/// `pid` `None` reads this process.
pub fn rss(pid: Option<u32>) -> Option<Rss> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(Rss {
        current: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Nearest-rank percentiles of `values` (seconds); zeros when empty.
pub fn percentiles(values: &mut [f64]) -> Percentiles {
    if values.is_empty() {
        return Percentiles {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
        };
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = (q * values.len() as f64).ceil() as usize;
        values[rank.clamp(1, values.len()) - 1]
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub num_requests: usize,
    pub concurrency: usize,
    pub elapsed_secs: f64,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Prompt and output tokens per second.
    pub total_tokens_per_sec: f64,
    pub output_tokens_per_sec: f64,
    pub ttft: Percentiles,
    /// The first submitted request's TTFT, and the median of the others': with a shared
    /// prefix and no warm-up, the cold computation against the prefix-cache hits.
    pub first_ttft: f64,
    pub rest_ttft_p50: f64,
    pub itl: Percentiles,
    pub rss_before: Option<Rss>,
    pub rss_after: Option<Rss>,
}

impl BenchReport {
    pub fn new(out: &RunOutput, concurrency: usize) -> Self {
        let prompt_tokens = out.timings.iter().map(|t| t.prompt_tokens).sum();
        let output_tokens: usize = out.timings.iter().map(|t| t.output_tokens).sum();
        let secs = out.elapsed.as_secs_f64().max(1e-9);
        let mut ttft: Vec<f64> = out.timings.iter().map(|t| t.ttft.as_secs_f64()).collect();
        let mut itl: Vec<f64> = out
            .timings
            .iter()
            .flat_map(|t| t.itls.iter().map(|d| d.as_secs_f64()))
            .collect();
        let mut rest: Vec<f64> = ttft.iter().skip(1).copied().collect();
        let first_ttft = ttft.first().copied().unwrap_or(0.0);
        let rest_ttft_p50 = percentiles(&mut rest).p50;
        Self {
            first_ttft,
            rest_ttft_p50,
            num_requests: out.timings.len(),
            concurrency,
            elapsed_secs: secs,
            prompt_tokens,
            output_tokens,
            total_tokens_per_sec: (prompt_tokens + output_tokens) as f64 / secs,
            output_tokens_per_sec: output_tokens as f64 / secs,
            ttft: percentiles(&mut ttft),
            itl: percentiles(&mut itl),
            rss_before: None,
            rss_after: None,
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conc = if self.concurrency == 0 {
            "all at once".to_string()
        } else {
            self.concurrency.to_string()
        };
        writeln!(
            f,
            "requests {}  concurrency {conc}  time {:.2} s",
            self.num_requests, self.elapsed_secs
        )?;
        writeln!(
            f,
            "tokens   prompt {}  output {}  (mean prompt {:.0})",
            self.prompt_tokens,
            self.output_tokens,
            self.prompt_tokens as f64 / self.num_requests.max(1) as f64
        )?;
        writeln!(
            f,
            "throughput  total {:.1} tok/s  output {:.1} tok/s",
            self.total_tokens_per_sec, self.output_tokens_per_sec
        )?;
        let ms = |p: &Percentiles| {
            format!(
                "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms",
                p.p50 * 1e3,
                p.p90 * 1e3,
                p.p99 * 1e3
            )
        };
        writeln!(f, "TTFT     {}", ms(&self.ttft))?;
        writeln!(
            f,
            "TTFT     first request {:.1} ms  later requests p50 {:.1} ms ({:.1}%)",
            self.first_ttft * 1e3,
            self.rest_ttft_p50 * 1e3,
            100.0 * self.rest_ttft_p50 / self.first_ttft.max(1e-9)
        )?;
        writeln!(f, "ITL      {}", ms(&self.itl))?;
        if let (Some(b), Some(a)) = (self.rss_before, self.rss_after) {
            writeln!(
                f,
                "RSS      before {:.0} MiB  after {:.0} MiB  peak {:.0} MiB",
                mib(b.current),
                mib(a.current),
                mib(a.peak)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        v.reverse();
        let p = percentiles(&mut v);
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        assert_eq!(percentiles(&mut []).p50, 0.0);
        let mut one = [4.0];
        assert_eq!(percentiles(&mut one).p99, 4.0);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let r = rss(None).expect("Linux /proc");
        assert!(r.current > 0 && r.peak >= r.current);
    }
}
