//! Reading access logs: JSON lines (`server.log_format = "json"`), plain or
//! gzip, from files or standard input (`-`). Other log lines are passed
//! over; lines that cannot be read are counted, never fatal.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// One access line, as far as `suggest` needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct Line {
    /// When the line was written (the response's end).
    pub timestamp: String,
    /// The client's name, `none` when not identified.
    pub client: String,
    /// The route's pattern, `none` when no route matched.
    pub route: String,
    /// Who produced the status: `mmgate` or `upstream`.
    pub by: String,
    /// mmgate's error code, when it refused or failed.
    #[serde(default)]
    pub code: Option<String>,
    /// The scopes used, comma-separated.
    #[serde(default)]
    pub scope: Option<String>,
    /// What a shadowed policy would have refused.
    #[serde(default)]
    pub would_refuse: Option<String>,
    /// GraphQL: operations in the request.
    #[serde(default)]
    pub operations: Option<u64>,
    /// GraphQL: the selected operation's depth and nodes.
    #[serde(default)]
    pub depth: Option<u64>,
    #[serde(default)]
    pub nodes: Option<u64>,
    /// Total time, to find when the request arrived.
    #[serde(default)]
    pub duration_us: u64,
}

impl Line {
    /// Whether the request went through every enforced policy: forwarded
    /// (or answered from a shared read), not refused by mmgate.
    pub fn passed(&self) -> bool {
        let forwarded =
            self.by == "upstream" || matches!(self.code.as_deref(), Some("upstream_unreachable" | "upstream_timeout"));
        forwarded && self.client != "none" && self.route != "none"
    }

    /// When the request arrived.
    pub fn arrived(&self) -> Option<SystemTime> {
        let written = humantime::parse_rfc3339(&self.timestamp).ok()?;
        Some(written.checked_sub(Duration::from_micros(self.duration_us)).unwrap_or(written))
    }

    /// Units it cost: its GraphQL operations, else 1.
    pub fn units(&self) -> u64 {
        self.operations.unwrap_or(1).max(1)
    }
}

/// What the logs held.
#[derive(Debug, Default)]
pub struct Read {
    /// Access lines read.
    pub lines: Vec<Line>,
    /// Lines that were neither access lines nor other mmgate log lines.
    pub malformed: usize,
    /// Where the first malformed line was (`file:line`).
    pub first_malformed: Option<String>,
}

/// Reads every access line of `sources` (`-`: standard input).
pub fn read(sources: &[impl AsRef<Path>]) -> io::Result<Read> {
    let mut read = Read::default();
    for source in sources {
        let source = source.as_ref();
        let raw: Box<dyn io::Read> = if source == Path::new("-") {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(source).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.display())))?)
        };
        let mut buffered = BufReader::new(raw);
        // gzip starts with 1f 8b.
        let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let lines: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(buffered)))
        } else {
            Box::new(buffered)
        };
        for (n, text) in lines.split(b'\n').enumerate() {
            let text = text?;
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse(&text) {
                Parsed::Access(line) => read.lines.push(*line),
                Parsed::Other => {}
                Parsed::Malformed => {
                    read.malformed += 1;
                    read.first_malformed.get_or_insert_with(|| format!("{}:{}", source.display(), n + 1));
                }
            }
        }
    }
    Ok(read)
}

enum Parsed {
    Access(Box<Line>),
    Other,
    Malformed,
}

fn parse(text: &[u8]) -> Parsed {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(text) else {
        return Parsed::Malformed;
    };
    match value.get("target").and_then(|t| t.as_str()) {
        Some("mmgate::access") => match serde_json::from_value::<Line>(value) {
            Ok(line) if line.arrived().is_some() => Parsed::Access(Box::new(line)),
            _ => Parsed::Malformed,
        },
        Some(_) => Parsed::Other,
        None => Parsed::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_are_read_other_lines_passed_over_and_garbage_counted() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.log");
        let access = r#"{"timestamp":"2026-11-30T12:00:01.000000Z","level":"INFO","client":"c","route":"/r/*","by":"upstream","status":200,"duration_us":1000,"target":"mmgate::access"}"#;
        let other =
            r#"{"timestamp":"2026-11-30T12:00:01Z","level":"WARN","fields":{"message":"x"},"target":"mmgate::keys"}"#;
        let text = format!("{access}\n{other}\nnot json\n\n{{\"target\":\"mmgate::access\"}}\n{access}\n");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("b.log.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, text.as_bytes()).unwrap();
        std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
        let read = read(&[&plain, &gz]).unwrap();
        assert_eq!(read.lines.len(), 4);
        assert_eq!(read.malformed, 4, "garbage and an access line missing its fields, in each file");
        assert_eq!(read.first_malformed.as_deref(), Some(&*format!("{}:3", plain.display())));
        let line = &read.lines[0];
        assert!(line.passed());
        assert_eq!(line.arrived(), humantime::parse_rfc3339("2026-11-30T12:00:00.999Z").ok());
    }
}
