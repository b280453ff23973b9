//! The standard `process_*` metrics every Prometheus client library exports
//! (CPU, memory, file descriptors, start time), read from `/proc` at each
//! scrape: what an operator's dashboards and alerts expect from the start.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads this process's figures from `/proc/self` when scraped.
#[derive(Debug)]
pub struct ProcessCollector;

/// One scrape's reading; a figure `/proc` does not give is left out.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

impl Reading {
    fn now() -> Self {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as i64;
        let boot = fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
        let mut reading = fs::read_to_string("/proc/self/stat")
            .ok()
            .map(|stat| parse_stat(&stat, ticks, page, boot))
            .unwrap_or_default();
        reading.open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        reading.max_fds = limit.current.and_then(|n| i64::try_from(n).ok());
        reading
    }
}

/// `btime` of `/proc/stat`: when the machine booted, in Unix seconds.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// The figures of `/proc/self/stat` (see proc(5)); fields are counted after
/// the command name, which may itself hold spaces and parentheses.
fn parse_stat(stat: &str, ticks: f64, page: i64, boot: Option<f64>) -> Reading {
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Reading {
        cpu_seconds: field(14).zip(field(15)).map(|(user, system)| (user + system) as f64 / ticks),
        start_time_seconds: field(22).zip(boot).map(|(start, boot)| boot + start as f64 / ticks),
        virtual_bytes: field(23).and_then(|v| i64::try_from(v).ok()),
        resident_bytes: field(24).and_then(|v| i64::try_from(v).ok()).map(|pages| pages * page),
        ..Reading::default()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = Reading::now();
        if let Some(v) = r.cpu_seconds {
            let counter = ConstCounter::new(v);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", r.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", r.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors", r.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", r.max_fds),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let gauge = ConstGauge::new(v);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        if let Some(v) = r.start_time_seconds {
            let gauge = ConstGauge::new(v);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 3000 0 0 0 250 50 0 0 20 0 3 0 1000 123456789 2048 18446744073709551615";
        let r = parse_stat(stat, 100.0, 4096, Some(1_700_000_000.0));
        assert_eq!(r.cpu_seconds, Some(3.0));
        assert_eq!(r.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(r.virtual_bytes, Some(123_456_789));
        assert_eq!(r.resident_bytes, Some(2048 * 4096));
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000.0));
    }

    #[test]
    fn this_process_can_be_read() {
        let r = Reading::now();
        assert!(r.resident_bytes.is_some_and(|b| b > 0), "{r:?}");
        assert!(r.open_fds.is_some_and(|n| n > 0), "{r:?}");
        assert!(r.cpu_seconds.is_some(), "{r:?}");
    }
}
