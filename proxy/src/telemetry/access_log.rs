//! One JSON object per HTTP request or TCP connection, with Envoy's response flags.
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::AccessLogSink;

#[derive(Serialize, Default, Debug)]
pub struct Entry {
    pub start_time: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub protocol: String,
    pub response_code: u16,
    pub response_flags: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_cluster: Option<String>,
    pub upstream_host: Option<String>,
    pub downstream_remote_address: String,
    pub x_request_id: Option<String>,
    pub authority: Option<String>,
    pub route_name: Option<String>,
}

/// Writers shared by every listener that logs to the same place.
#[derive(Clone)]
pub struct Logger {
    sinks: Arc<Vec<Sink>>,
}

enum Sink {
    Stdout,
    Stderr,
    File(Mutex<std::fs::File>),
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Logger({} sinks)", self.sinks.len())
    }
}

impl Logger {
    pub fn open(sinks: &[AccessLogSink]) -> std::io::Result<Option<Logger>> {
        if sinks.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for s in sinks {
            out.push(match s {
                AccessLogSink::Stdout => Sink::Stdout,
                AccessLogSink::Stderr => Sink::Stderr,
                AccessLogSink::File(p) => {
                    Sink::File(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?))
                }
            });
        }
        Ok(Some(Logger { sinks: Arc::new(out) }))
    }

    pub fn log(&self, e: &Entry) {
        let Ok(mut line) = serde_json::to_vec(e) else { return };
        line.push(b'\n');
        for s in self.sinks.iter() {
            let _ = match s {
                Sink::Stdout => std::io::stdout().lock().write_all(&line),
                Sink::Stderr => std::io::stderr().lock().write_all(&line),
                Sink::File(f) => f.lock().map(|mut f| f.write_all(&line)).unwrap_or(Ok(())),
            };
        }
    }
}

pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem / 60) % 60, rem % 60, d.subsec_millis())
}

/// Howard Hinnant's days → civil date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates_are_right() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_782), (2026, 11, 25));
    }
}
