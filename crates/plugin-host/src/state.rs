//! What a plugin's imports reach: the state of its store.
//!
//! A plugin sees a WASI that grants nothing (no preopened directory, no
//! environment, no argument, standard input closed) and the contract's
//! `log`, whose lines are bounded per call and per realm and escaped so
//! that a message stays one line of the server's log. Everything else the
//! store carries (its meter, its label) is the host's.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings;
use crate::limits::{MAX_OUTPUT_STRING, MAX_RANDOM_BYTES, MAX_WASI_RESOURCES, Meter};

/// Log lines one call may write; later ones are dropped and counted.
const LOG_LINES_PER_CALL: u32 = 32;
/// Log bytes one call may write.
const LOG_BYTES_PER_CALL: usize = 8 << 10;
/// Log lines all calls of one realm may write in a second.
const LOG_LINES_PER_REALM_SECOND: u32 = 100;
/// Log bytes all calls of one realm may write in a second.
const LOG_BYTES_PER_REALM_SECOND: usize = 64 << 10;

/// A realm's log budget for the current second.
#[derive(Debug)]
pub(crate) struct LogWindow {
    started: Instant,
    lines: u32,
    bytes: usize,
    suppressed: u64,
}

impl LogWindow {
    /// A fresh budget, for the second starting `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self { started: now, lines: 0, bytes: 0, suppressed: 0 }
    }
}

/// A store's state: a WASI that grants nothing, the meter, and the label
/// and budget of the plugin's log lines.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) meter: Meter,
    /// `realm/plugin@version`, on every line the plugin logs.
    pub(crate) label: Arc<str>,
    log: CallLog,
}

/// What the current call has logged.
#[derive(Default)]
struct CallLog {
    lines: u32,
    bytes: usize,
    suppressed: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::types::Host for HostState {}

impl bindings::log::Host for HostState {
    fn write(&mut self, level: bindings::log::Level, message: String) {
        use bindings::log::Level;
        let message = escape_log(truncate(&message, MAX_OUTPUT_STRING));
        if !self.may_log(message.len()) {
            return;
        }
        let plugin = &*self.label;
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl HostState {
    /// The state of a fresh store: WASI granting nothing, `meter`, and
    /// `label` on its log lines.
    pub(crate) fn new(meter: Meter, label: Arc<str>) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_WASI_RESOURCES);
        Self {
            wasi: WasiCtx::builder().max_random_size(MAX_RANDOM_BYTES).build(),
            table,
            meter,
            label,
            log: CallLog::default(),
        }
    }

    /// Whether a line of `bytes` fits the call's and the realm's log
    /// budgets; counts it if so, and counts it as suppressed if not.
    fn may_log(&mut self, bytes: usize) -> bool {
        let call = &mut self.log;
        if call.lines >= LOG_LINES_PER_CALL || call.bytes + bytes > LOG_BYTES_PER_CALL {
            call.suppressed += 1;
            return false;
        }
        let realm = &self.meter.realm;
        let mut window = realm.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            if window.suppressed > 0 {
                tracing::warn!(realm = %realm.name, suppressed = window.suppressed, "plugin log lines over the realm's rate were dropped");
            }
            *window = LogWindow::new(now);
        }
        if window.lines >= LOG_LINES_PER_REALM_SECOND || window.bytes + bytes > LOG_BYTES_PER_REALM_SECOND {
            window.suppressed += 1;
            return false;
        }
        window.lines += 1;
        window.bytes += bytes;
        call.lines += 1;
        call.bytes += bytes;
        true
    }

    /// Ends a call's log budget; what it dropped is reported with its
    /// realm's, at most once a second.
    pub(crate) fn end_call(&mut self) {
        let log = std::mem::take(&mut self.log);
        if log.suppressed > 0 {
            let mut window = self.meter.realm.log.lock().unwrap_or_else(|p| p.into_inner());
            window.suppressed += log.suppressed;
        }
    }
}

/// A plugin's log message as one line: control characters (newlines, carriage
/// returns, escape sequences) and Unicode line separators are escaped, so a
/// message can neither forge a log line nor rewrite the terminal.
pub(crate) fn escape_log(message: &str) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !message.chars().any(escaped) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 16);
    for c in message.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The first `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
