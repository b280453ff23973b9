//! One access-log line: its fields, in order, written as text or JSON.
//!
//! The binary formats the line itself rather than through tracing-subscriber:
//! measured side by side (`bench/ab.sh`, 5 alternating rounds of 8 s, one
//! worker), the default tracing-subscriber format through a
//! tracing-appender non-blocking writer served 0.92 of this writer's req/s
//! on GET (36.7k against 40.0k) and 0.89 on the 1 KB GraphQL POST (31.6k
//! against 35.5k): more than the 5 % that would justify keeping code of
//! ours. The bytes are those tracing-subscriber writes, which a test
//! compares. Without the binary's sink (tests, library use), lines go
//! through `tracing`.

use std::io::Write as _;
use std::sync::OnceLock;

use tracing::Level;

use super::timestamp::Timestamp;
use crate::logging::{self, BufferedStderr};

/// Where the binary sends access lines, formatted here rather than by
/// tracing-subscriber: the same text, at a fraction of the cost (a generic
/// event formatter was the largest part of mmgate's own work per request).
struct AccessSink {
    out: BufferedStderr,
}

static SINK: OnceLock<AccessSink> = OnceLock::new();

const LINE_CAPACITY: usize = 512;

thread_local! {
    /// Each thread's line being written, reused: one allocation fewer per request.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(LINE_CAPACITY));
}

/// Writes access lines straight to `out` (text, or JSON per
/// `logging::is_json`), as the tracing subscriber would format them without
/// colours. Without this (tests, library use) they go through `tracing`.
/// `RUST_LOG` applies either way.
pub fn write_lines_to(out: BufferedStderr) {
    let _ = SINK.set(AccessSink { out });
}

/// One access-log line's fields, in their logged order; optional ones are
/// left out when absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLine<'a> {
    /// The request id sent upstream and returned.
    pub request_id: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The matched route's pattern, or `none`.
    pub route: &'a str,
    /// The normalised path (what the upstream got), once it was read.
    pub path: Option<&'a str>,
    /// The identified client, or `none`.
    pub client: &'a str,
    /// Who called: `address:port`, or `uid:N` on a Unix socket.
    pub peer: &'a str,
    /// The caller's `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// The status the caller got (499: it left first).
    pub status: u16,
    /// Who produced that status: `mmgate` or `upstream`.
    pub by: &'a str,
    /// mmgate's error code, when mmgate refused or failed.
    pub code: Option<&'a str>,
    /// The limit that refused a 429, as `kind:name`.
    pub limit: Option<&'a str>,
    /// The upstream's status, when it answered.
    pub upstream_status: Option<u16>,
    /// The GraphQL operation type, on GraphQL routes.
    pub operation: Option<&'a str>,
    /// The GraphQL operation's name, when it has one.
    pub operation_name: Option<&'a str>,
    /// Operations in the request (a batch has several).
    pub operations: Option<u64>,
    /// The selected operation's depth, as MachineMetrics counts it.
    pub depth: Option<u64>,
    /// The selected operation's nodes, as MachineMetrics counts them.
    pub nodes: Option<u64>,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Time to the end of the response body.
    pub duration_us: u64,
    /// Time to the upstream's response headers.
    pub upstream_latency_us: Option<u64>,
    /// The response body failed or stalled and was cut.
    pub body_cut: bool,
    /// How a shared read was served: `hit`, `miss`, `coalesced` or `bypass`.
    pub cache: Option<&'a str>,
    /// Time spent waiting for a turn under a limit's `max_wait`.
    pub wait_us: Option<u64>,
    /// The scopes the request used.
    pub scope: Option<&'a str>,
    /// What a policy in shadow mode would have refused (an error code).
    pub would_refuse: Option<&'a str>,
}

impl AccessLine<'_> {
    /// Logs the line at INFO, target `mmgate::access`, if `RUST_LOG` lets it through.
    pub fn log(&self) {
        if !tracing::enabled!(target: "mmgate::access", Level::INFO) {
            return;
        }
        let Some(sink) = SINK.get() else {
            return self.log_through_tracing();
        };
        let timestamp = Timestamp::now();
        LINE.with_borrow_mut(|line| {
            line.clear();
            self.write(line, logging::is_json(), timestamp.as_str());
            sink.out.write_line(line);
            // A line with a huge header in it does not keep its buffer.
            if line.capacity() > 16 * 1024 {
                *line = Vec::with_capacity(LINE_CAPACITY);
            }
        });
    }

    fn log_through_tracing(&self) {
        tracing::info!(
            target: "mmgate::access",
            request_id = self.request_id,
            method = %self.method,
            route = self.route,
            path = self.path,
            client = self.client,
            peer = self.peer,
            user_agent = self.user_agent,
            status = self.status,
            by = self.by,
            code = self.code,
            limit = self.limit,
            upstream_status = self.upstream_status,
            operation = self.operation,
            operation_name = self.operation_name,
            operations = self.operations,
            depth = self.depth,
            nodes = self.nodes,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            duration_us = self.duration_us,
            upstream_latency_us = self.upstream_latency_us,
            body_cut = self.body_cut,
            cache = self.cache,
            wait_us = self.wait_us,
            scope = self.scope,
            would_refuse = self.would_refuse,
        );
    }

    /// The line as tracing-subscriber writes it: text
    /// (`2026-11-27T23:46:05.549290Z  INFO mmgate::access: request_id="..." method=GET ...`)
    /// or its flattened JSON object.
    fn write(&self, out: &mut Vec<u8>, json: bool, timestamp: impl std::fmt::Display) {
        let mut f = Fields { out, json };
        if json {
            let _ = write!(f.out, "{{\"timestamp\":\"{timestamp}\",\"level\":\"INFO\"");
        } else {
            let _ = write!(f.out, "{timestamp}  INFO mmgate::access:");
        }
        f.string("request_id", self.request_id);
        f.displayed("method", self.method);
        f.string("route", self.route);
        f.maybe_string("path", self.path);
        f.string("client", self.client);
        f.string("peer", self.peer);
        f.maybe_string("user_agent", self.user_agent);
        f.number("status", self.status.into());
        f.string("by", self.by);
        f.maybe_string("code", self.code);
        f.maybe_string("limit", self.limit);
        f.maybe_number("upstream_status", self.upstream_status.map(u64::from));
        f.maybe_string("operation", self.operation);
        f.maybe_string("operation_name", self.operation_name);
        f.maybe_number("operations", self.operations);
        f.maybe_number("depth", self.depth);
        f.maybe_number("nodes", self.nodes);
        f.number("bytes_in", self.bytes_in);
        f.number("bytes_out", self.bytes_out);
        f.number("duration_us", self.duration_us);
        f.maybe_number("upstream_latency_us", self.upstream_latency_us);
        f.boolean("body_cut", self.body_cut);
        f.maybe_string("cache", self.cache);
        f.maybe_number("wait_us", self.wait_us);
        f.maybe_string("scope", self.scope);
        f.maybe_string("would_refuse", self.would_refuse);
        f.out.extend_from_slice(if json { b",\"target\":\"mmgate::access\"}\n" } else { b"\n" });
    }
}

/// Writes one line's fields as text (`name=value`) or JSON (`,"name":value`).
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    json: bool,
}

impl Fields<'_> {
    fn name(&mut self, name: &str) {
        // Single bytes pushed, not slices copied: a field name costs one copy.
        if self.json {
            self.out.push(b',');
            self.out.push(b'"');
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'"');
            self.out.push(b':');
        } else {
            self.out.push(b' ');
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'=');
        }
    }

    /// A string field: quoted and escaped as `{:?}` (text) or JSON would.
    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        if self.json {
            // Escaping a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *self.out, value);
        } else if logging::needs_no_escape(value) {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        } else {
            let _ = write!(self.out, "{value:?}");
        }
    }

    /// A field logged through `Display` (`%`): bare in text, a string in JSON.
    fn displayed(&mut self, name: &str, value: &str) {
        if self.json {
            return self.string(name, value);
        }
        self.name(name);
        self.out.extend_from_slice(value.as_bytes());
    }

    fn maybe_string(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.string(name, value);
        }
    }

    fn maybe_number(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.number(name, value);
        }
    }

    fn boolean(&mut self, name: &str, value: bool) {
        self.name(name);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn number(&mut self, name: &str, value: u64) {
        self.name(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::logging::{PlainFields, Rfc3339Micros};

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line as the binary's tracing subscriber formats it, colours off.
    fn through_tracing(line: &AccessLine<'_>, json: bool) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_timer(Rfc3339Micros)
            .with_writer(move || Capture(Arc::clone(&sink)));
        if json {
            let subscriber = builder.json().flatten_event(true).with_current_span(false).finish();
            tracing::subscriber::with_default(subscriber, || line.log_through_tracing());
        } else {
            let subscriber = builder.fmt_fields(PlainFields).finish();
            tracing::subscriber::with_default(subscriber, || line.log_through_tracing());
        }
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn direct(line: &AccessLine<'_>, json: bool) -> String {
        let mut out = Vec::new();
        let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        line.write(&mut out, json, timestamp);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn direct_lines_are_what_tracing_subscriber_writes() {
        let full = AccessLine {
            request_id: "3f9c0a1b2c4d-0000002a",
            method: "POST",
            route: "/graphql",
            path: Some("/graphql"),
            client: "dashboard",
            peer: "127.0.0.1:50312",
            user_agent: Some("apollo-client/4.0 \"quoted\""),
            status: 429,
            by: "mmgate",
            code: Some("rate_limited"),
            limit: Some("client:dashboard"),
            upstream_status: Some(200),
            operation: Some("query"),
            operation_name: Some("Machines"),
            operations: Some(1),
            depth: Some(2),
            nodes: Some(3),
            bytes_in: 74,
            bytes_out: 5121,
            duration_us: 48210,
            upstream_latency_us: Some(47650),
            body_cut: false,
            cache: Some("miss"),
            wait_us: Some(1500),
            scope: Some("reporting"),
            would_refuse: Some("scope_denied"),
        };
        // Nothing optional, and values that need escaping in both formats.
        let sparse = AccessLine {
            request_id: "id",
            method: "GET",
            route: "/odd\"route\\é\n",
            client: "none",
            peer: "uid:1000",
            status: 499,
            by: "mmgate",
            bytes_out: u64::MAX,
            body_cut: true,
            ..AccessLine::default()
        };
        // Same length timestamps; everything after them must be identical.
        let skip = "2026-11-27T23:46:05.549290Z".len() + r#"{"timestamp":"""#.len();
        for line in [full, sparse] {
            for json in [false, true] {
                let (ours, theirs) = (direct(&line, json), through_tracing(&line, json));
                let from = if json { skip } else { skip - r#"{"timestamp":"""#.len() };
                assert_eq!(ours[from..], theirs[from..], "json={json}\nours:   {ours}theirs: {theirs}");
                assert!(ours.ends_with('\n'));
            }
        }
    }
}
