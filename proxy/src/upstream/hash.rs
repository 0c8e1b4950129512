//! Consistent-hash balancing: the request's key (route `hash_policy`) and the two tables Envoy
//! has, RING_HASH (Karger's ring, entries per endpoint by weight) and MAGLEV (Google's lookup
//! table, filled by weighted permutations). Both hash with xxHash64, as Envoy does, and are
//! built once per endpoint set. A key that lands on an endpoint out of rotation moves on to the
//! next one in the table.
use std::net::SocketAddr;

use xxhash_rust::xxh64::xxh64;

use super::cluster::Endpoint;
use crate::config::route::{HashKey, HashPolicy};
use std::sync::Arc;

pub fn hash(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// What a hash key is computed from.
pub struct HashInput<'a> {
    pub headers: &'a http::HeaderMap,
    pub query: Option<&'a str>,
    pub peer: SocketAddr,
}

/// The request's hash under `policies` (Envoy combines several by rotate-and-xor), and the
/// cookie to set when a cookie policy with a ttl found none: (name, value, ttl, path).
pub fn request_hash(policies: &[HashPolicy], input: &HashInput<'_>) -> (Option<u64>, Option<NewCookie>) {
    let mut acc: Option<u64> = None;
    let mut cookie = None;
    for p in policies {
        let h = match &p.key {
            HashKey::Header(name) => {
                let mut vals = input.headers.get_all(name).iter().peekable();
                vals.peek().is_some().then(|| vals.fold(0u64, |a, v| a.rotate_left(1) ^ hash(v.as_bytes())))
            }
            HashKey::Cookie { name, ttl, path } => match cookie_value(input.headers, name) {
                Some(v) => Some(hash(v.as_bytes())),
                None => ttl.map(|ttl| {
                    // Envoy derives a new cookie from the client's address; so do we.
                    let value = format!("{:016x}", hash(input.peer.to_string().as_bytes()) ^ fastrand::u64(..));
                    let h = hash(value.as_bytes());
                    cookie = Some(NewCookie { name: name.clone(), value, ttl, path: path.clone() });
                    h
                }),
            },
            HashKey::SourceIp => Some(hash(input.peer.ip().to_string().as_bytes())),
            HashKey::Query(name) => input.query.and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| hash(v.as_bytes()))
                })
            }),
        };
        if let Some(h) = h {
            acc = Some(acc.map_or(h, |a| a.rotate_left(1) ^ h));
            if p.terminal {
                break;
            }
        }
    }
    (acc, cookie)
}

/// A cookie the proxy made up for a cookie hash policy with a ttl.
#[derive(Debug, Clone)]
pub struct NewCookie {
    pub name: String,
    pub value: String,
    pub ttl: std::time::Duration,
    pub path: Option<String>,
}

impl NewCookie {
    pub fn set_cookie(&self) -> String {
        let mut s = format!("{}=\"{}\"", self.name, self.value);
        if let Some(p) = &self.path {
            s.push_str(&format!("; Path={p}"));
        }
        if !self.ttl.is_zero() {
            s.push_str(&format!("; Max-Age={}", self.ttl.as_secs()));
        }
        s.push_str("; HttpOnly");
        s
    }
}

fn cookie_value(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
    })
}

/// A built table: endpoint indexes by hash.
#[derive(Debug)]
pub enum Table {
    /// (point, endpoint index), sorted by point.
    Ring(Vec<(u64, u32)>),
    Maglev(Vec<u32>),
}

impl Table {
    pub fn ring(list: &[Arc<Endpoint>], min_size: u64, max_size: u64) -> Option<Table> {
        if list.is_empty() {
            return None;
        }
        // At least min_size entries, each endpoint its share by weight. Unlike Envoy, the
        // entries per unit of weight are rounded up to a power of two, so that an endpoint
        // joining or leaving rarely changes the others' entries (and the keys they own).
        let total: u64 = list.iter().map(|e| e.weight.max(1) as u64).sum();
        let per = min_size.div_ceil(total).max(1).next_power_of_two();
        let per = if per * total > max_size { (max_size / total).max(1) } else { per };
        let mut ring = Vec::new();
        for (i, e) in list.iter().enumerate() {
            let n = e.weight.max(1) as u64 * per;
            let key = e.addr.to_string();
            for j in 0..n {
                ring.push((hash(format!("{key}_{j}").as_bytes()), i as u32));
            }
        }
        ring.sort_unstable();
        Some(Table::Ring(ring))
    }

    pub fn maglev(list: &[Arc<Endpoint>], size: u64) -> Option<Table> {
        if list.is_empty() {
            return None;
        }
        let m = size as usize;
        // Each endpoint's permutation (offset, skip), walked in turn; heavier endpoints take
        // more turns (weighted Maglev, as Envoy's).
        let perms: Vec<(u64, u64)> = list
            .iter()
            .map(|e| {
                let k = e.addr.to_string();
                (xxh64(k.as_bytes(), 0) % size, xxh64(k.as_bytes(), 1) % (size - 1) + 1)
            })
            .collect();
        let max_w = list.iter().map(|e| e.weight.max(1)).max().unwrap_or(1) as f64;
        let mut next = vec![0u64; list.len()];
        let mut credit = vec![0f64; list.len()];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        'outer: loop {
            for i in 0..list.len() {
                credit[i] += list[i].weight.max(1) as f64 / max_w;
                if credit[i] < 1.0 {
                    continue;
                }
                credit[i] -= 1.0;
                let (offset, skip) = perms[i];
                loop {
                    let c = ((offset + next[i] * skip) % size) as usize;
                    next[i] += 1;
                    if table[c] == u32::MAX {
                        table[c] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'outer;
                }
            }
        }
        Some(Table::Maglev(table))
    }

    /// The endpoint for `h` that `ok` accepts: the first in table order from `h`'s place.
    pub fn pick(&self, h: u64, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Table::Ring(ring) => {
                let start = ring.partition_point(|(p, _)| *p < h);
                (0..ring.len().min(n * 64).max(1)).map(|k| ring[(start + k) % ring.len()].1 as usize).find(|&i| ok(i))
            }
            Table::Maglev(t) => {
                let start = (h % t.len() as u64) as usize;
                (0..t.len().min(n * 64).max(1)).map(|k| t[(start + k) % t.len()] as usize).find(|&i| ok(i))
            }
        }
    }
}

pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n).map(|i| Endpoint::new(([10, 0, 0, 1], 8000 + i).into(), 1)).collect()
    }

    /// The share of 10,000 keys that stay on the same endpoint when one of ten leaves.
    fn kept(build: impl Fn(&[Arc<Endpoint>]) -> Table) -> f64 {
        let all = endpoints(10);
        let fewer: Vec<_> = all.iter().filter(|e| e.addr.port() != 8003).cloned().collect();
        let (a, b) = (build(&all), build(&fewer));
        let mut same = 0;
        for k in 0..10_000u32 {
            let h = hash(&k.to_be_bytes());
            let before = all[a.pick(h, 10, |_| true).unwrap()].addr;
            let after = fewer[b.pick(h, 9, |_| true).unwrap()].addr;
            if before == after || before.port() == 8003 {
                same += 1;
            }
        }
        same as f64 / 10_000.0
    }

    #[test]
    fn ring_hash_keeps_most_keys_when_an_endpoint_leaves() {
        // Keys of the endpoint that left must move; the others (90%) stay: > 95% counted.
        let k = kept(|l| Table::ring(l, 1024, 8 << 20).unwrap());
        assert!(k > 0.95, "{k}");
    }

    #[test]
    fn maglev_keeps_most_keys_when_an_endpoint_leaves() {
        let k = kept(|l| Table::maglev(l, 65537).unwrap());
        assert!(k > 0.95, "{k}");
    }

    #[test]
    fn tables_follow_weights_and_skip_endpoints_out_of_rotation() {
        let mut list = endpoints(2);
        list[0] = Endpoint::new(list[0].addr, 3);
        for t in [Table::ring(&list, 1024, 8 << 20).unwrap(), Table::maglev(&list, 65537).unwrap()] {
            let mut heavy = 0;
            for k in 0..10_000u32 {
                if t.pick(hash(&k.to_be_bytes()), 2, |_| true) == Some(0) {
                    heavy += 1;
                }
                assert_eq!(t.pick(hash(&k.to_be_bytes()), 2, |i| i == 1), Some(1));
            }
            // 3:1 within a wide margin (10,000 keys: the standard error is under 1%).
            assert!((6500..8500).contains(&heavy), "{heavy}");
        }
        assert!(is_prime(65537) && !is_prime(65536));
    }
}
