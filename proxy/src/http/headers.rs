//! Header rules of a proxy: hop-by-hop removal, x-forwarded-*, x-request-id and `server`.
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::ServerHeader;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named by `Connection`.
/// `keep_upgrade` keeps `Upgrade`/`Connection: upgrade` for a tunnel being set up.
pub fn remove_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over the names (cheap enum compares for standard
    // headers) avoids a hash lookup per hop-by-hop name.
    if !keep_upgrade && !h.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(conn) = h.get(header::CONNECTION) {
        if conn.as_bytes().contains(&b',') || !is_simple_connection_token(conn.as_bytes()) {
            let named: Vec<HeaderName> = conn
                .to_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .filter(|n| !(keep_upgrade && n == header::UPGRADE))
                .collect();
            for n in named {
                if n != header::TE {
                    h.remove(&n);
                }
            }
        }
        h.remove(header::CONNECTION);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::PROXY_AUTHENTICATE);
    h.remove(header::PROXY_AUTHORIZATION);
    h.remove(header::TRAILER);
    // TE is hop-by-hop, but "trailers" must reach a gRPC upstream.
    if let Some(te) = h.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            h.remove(header::TE);
        }
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::TRANSFER_ENCODING
        || n == header::TE
        || n == header::UPGRADE
        || n == header::PROXY_AUTHENTICATE
        || n == header::PROXY_AUTHORIZATION
        || n == header::TRAILER
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
}

/// `keep-alive` / `close` name no other header, so there is nothing more to strip.
fn is_simple_connection_token(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
}

/// Envoy's trusted client address (its docs, "x-forwarded-for"): with `use_remote_address` the
/// connection's peer, or with N > 0 trusted hops the Nth address from the right of the incoming
/// XFF (the (N+1)th once the peer is appended); without `use_remote_address` the (N+1)th from the
/// right. Too few or unparsable addresses fall back to the peer. XFF addresses carry no port.
pub fn trusted_client(h: &HeaderMap, peer: SocketAddr, use_remote_address: bool, trusted_hops: u32) -> SocketAddr {
    let skip = match (use_remote_address, trusted_hops) {
        (true, 0) => return peer,
        (true, n) => n - 1,
        (false, n) => n,
    };
    let mut values = h.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    values.reverse();
    let mut from_right = values.into_iter().flat_map(|v| v.rsplit(',')).map(str::trim).filter(|a| !a.is_empty());
    match from_right.nth(skip as usize).and_then(|a| a.parse::<IpAddr>().ok()) {
        Some(ip) => SocketAddr::new(ip, 0),
        None => peer,
    }
}

/// Envoy's internal addresses: loopback, RFC 1918, link-local and unique-local IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Timeouts a request asks for with Envoy's headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TimeoutHeaders {
    /// `x-envoy-upstream-rq-timeout-ms` (or, when the router respects it,
    /// `x-envoy-expected-rq-timeout-ms`): Some(None) for 0, no timeout.
    pub global: Option<Option<std::time::Duration>>,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`.
    pub per_try: Option<std::time::Duration>,
}

/// Takes the timeout headers out of the request (they never reach the upstream) and returns
/// what they ask for, if the caller may ask: an edge request from an external address has them
/// ignored, as Envoy sanitises `x-envoy-*` headers of external requests.
pub fn timeout_headers(h: &mut HeaderMap, trusted: bool, respect_expected: bool) -> TimeoutHeaders {
    static UPSTREAM: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
    static PER_TRY: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
    static EXPECTED: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
    // Most requests have none: one pass over the names instead of three lookups.
    if !h.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        return TimeoutHeaders::default();
    }
    let mut ms = |name: &HeaderName| {
        let v = h.remove(name)?;
        v.to_str().ok()?.trim().parse::<u64>().ok()
    };
    let upstream = ms(&UPSTREAM);
    let per_try = ms(&PER_TRY);
    let expected = ms(&EXPECTED);
    if !trusted {
        return TimeoutHeaders::default();
    }
    let global = if respect_expected { expected.or(upstream) } else { upstream };
    let d = std::time::Duration::from_millis;
    TimeoutHeaders { global: global.map(|g| (g > 0).then(|| d(g))), per_try: per_try.filter(|p| *p > 0).map(d) }
}

/// A gRPC `grpc-timeout` header (`<up to 8 digits><H|M|S|m|u|n>`).
pub fn grpc_timeout(h: &HeaderMap) -> Option<std::time::Duration> {
    let v = h.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    use std::time::Duration as D;
    Some(match unit {
        "H" => D::from_secs(n * 3600),
        "M" => D::from_secs(n * 60),
        "S" => D::from_secs(n),
        "m" => D::from_millis(n),
        "u" => D::from_micros(n),
        "n" => D::from_nanos(n),
        _ => return None,
    })
}

/// Envoy's rules: with `use_remote_address`, the peer address is appended to XFF (unless
/// `skip_xff_append`) and `x-forwarded-proto` is set from the connection; otherwise an existing XFP
/// is kept and one is only added when absent.
pub fn forwarded(h: &mut HeaderMap, peer: IpAddr, use_remote_address: bool, skip_xff_append: bool, tls: bool) {
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    if use_remote_address {
        if !skip_xff_append {
            let peer = peer.to_canonical().to_string();
            let v = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.is_empty() => format!("{prev},{peer}"),
                _ => peer,
            };
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        h.insert(X_FORWARDED_PROTO.clone(), proto);
    } else if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO.clone(), proto);
    }
}

/// Generates a UUIDv4 x-request-id when absent (or always, unless external ids are preserved and
/// the request came from an edge with `use_remote_address`).
pub fn request_id(h: &mut HeaderMap, generate: bool, preserve_external: bool, edge: bool) -> Option<HeaderValue> {
    if !generate {
        return h.get(&X_REQUEST_ID).cloned();
    }
    let keep = h.contains_key(&X_REQUEST_ID) && (!edge || preserve_external);
    if !keep {
        h.insert(X_REQUEST_ID.clone(), uuid_v4());
    }
    h.get(&X_REQUEST_ID).cloned()
}

pub fn uuid_v4() -> HeaderValue {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = [0u8; 36];
    let mut j = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s[j] = b'-';
            j += 1;
        }
        s[j] = HEX[(byte >> 4) as usize];
        s[j + 1] = HEX[(byte & 0xf) as usize];
        j += 2;
    }
    HeaderValue::from_bytes(&s).expect("hex is a valid header value")
}

pub fn server(h: &mut HeaderMap, rule: &ServerHeader) {
    match rule {
        ServerHeader::Overwrite(v) => {
            h.insert(header::SERVER, v.clone());
        }
        ServerHeader::AppendIfAbsent(v) => {
            if !h.contains_key(header::SERVER) {
                h.insert(header::SERVER, v.clone());
            }
        }
        ServerHeader::PassThrough => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn te_trailers_is_kept_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn grpc_timeout_parses_every_unit_and_refuses_the_malformed() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        use std::time::Duration as D;
        assert_eq!(t("1H"), Some(D::from_secs(3600)));
        assert_eq!(t("2M"), Some(D::from_secs(120)));
        assert_eq!(t("3S"), Some(D::from_secs(3)));
        assert_eq!(t("250m"), Some(D::from_millis(250)));
        assert_eq!(t("7u"), Some(D::from_micros(7)));
        assert_eq!(t("9n"), Some(D::from_nanos(9)));
        assert_eq!(t("123456789S"), None);
        assert_eq!(t("S"), None);
        assert_eq!(t("10x"), None);
    }

    #[test]
    fn timeout_headers_are_taken_out_and_honoured_only_from_trusted_callers() {
        let ms = std::time::Duration::from_millis;
        let mut h = HeaderMap::new();
        h.insert("x-envoy-upstream-rq-timeout-ms", HeaderValue::from_static("250"));
        h.insert("x-envoy-upstream-rq-per-try-timeout-ms", HeaderValue::from_static("100"));
        h.insert("x-envoy-expected-rq-timeout-ms", HeaderValue::from_static("900"));
        let mut a = h.clone();
        assert_eq!(
            timeout_headers(&mut a, true, false),
            TimeoutHeaders { global: Some(Some(ms(250))), per_try: Some(ms(100)) }
        );
        assert!(a.is_empty(), "the headers do not go upstream");
        let mut b = h.clone();
        assert_eq!(timeout_headers(&mut b, true, true).global, Some(Some(ms(900))));
        let mut c = h.clone();
        assert_eq!(timeout_headers(&mut c, false, true), TimeoutHeaders::default());
        assert!(c.is_empty());
        let mut z = HeaderMap::new();
        z.insert("x-envoy-upstream-rq-timeout-ms", HeaderValue::from_static("0"));
        assert_eq!(timeout_headers(&mut z, true, false).global, Some(None));
        assert!(is_internal("10.1.2.3".parse().unwrap()) && is_internal("::1".parse().unwrap()));
        assert!(is_internal("fd00::1".parse().unwrap()) && !is_internal("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn trusted_client_skips_the_trusted_hops_of_xff() {
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1, 203.0.113.7,192.0.2.3"));
        let ip = |a: SocketAddr| a.ip().to_string();
        assert_eq!(trusted_client(&h, peer, true, 0), peer);
        assert_eq!(ip(trusted_client(&h, peer, true, 1)), "192.0.2.3");
        assert_eq!(ip(trusted_client(&h, peer, true, 2)), "203.0.113.7");
        assert_eq!(ip(trusted_client(&h, peer, false, 0)), "192.0.2.3");
        assert_eq!(ip(trusted_client(&h, peer, false, 1)), "203.0.113.7");
        // More trusted hops than addresses: the peer.
        assert_eq!(trusted_client(&h, peer, true, 4), peer);
        assert_eq!(trusted_client(&h, peer, false, 3), peer);
        // Without XFF, or with garbage in it, the peer.
        assert_eq!(trusted_client(&HeaderMap::new(), peer, false, 0), peer);
        h.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(trusted_client(&h, peer, false, 0), peer);
    }

    #[test]
    fn xff_appends_peer_only_with_use_remote_address() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        forwarded(&mut h, "10.0.0.1".parse().unwrap(), true, false, false);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4,10.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        let mut h = HeaderMap::new();
        forwarded(&mut h, "10.0.0.1".parse().unwrap(), false, false, false);
        assert!(h.get("x-forwarded-for").is_none());
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }

    #[test]
    fn request_id_is_a_uuid_v4_and_kept_when_internal() {
        let mut h = HeaderMap::new();
        let id = request_id(&mut h, true, false, true).unwrap();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        assert_eq!(request_id(&mut h, true, false, false).unwrap(), "abc");
        // An edge proxy does not trust an external id unless told to.
        assert_ne!(request_id(&mut h, true, false, true).unwrap(), "abc");
    }

    #[test]
    fn skip_xff_append_leaves_x_forwarded_for_as_it_came() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        forwarded(&mut h, "10.0.0.1".parse().unwrap(), true, true, true);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4");
        // x-forwarded-proto is still the connection's.
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    }

    #[test]
    fn request_id_generation_and_preservation_follow_the_flags() {
        // generate_request_id: false adds none.
        let mut h = HeaderMap::new();
        assert!(request_id(&mut h, false, false, true).is_none());
        assert!(h.get("x-request-id").is_none());
        // preserve_external_request_id keeps the client's id even at the edge.
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        assert_eq!(request_id(&mut h, true, true, true).unwrap(), "abc");
    }
}
