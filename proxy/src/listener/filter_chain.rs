//! Filter chain selection, most specific match first, in Envoy's order of criteria:
//! destination port, server name (exact before wildcard), transport protocol, application protocol.
use super::tls_inspector::ClientHello;
use crate::config::ChainMatch;
use crate::snapshot::Chain;

pub fn select<'a>(
    chains: &'a [Chain],
    default: Option<&'a Chain>,
    port: u16,
    hello: &ClientHello,
) -> Option<&'a Chain> {
    chains
        .iter()
        .filter_map(|c| score(&c.matcher, port, hello).map(|s| (s, c)))
        // Highest score wins; on a tie the earlier chain (config order) wins.
        .fold(None, |best: Option<(u32, &Chain)>, (s, c)| match best {
            Some((bs, _)) if bs >= s => best,
            _ => Some((s, c)),
        })
        .map(|(_, c)| c)
        .or(default)
}

/// None when the chain does not match; otherwise a specificity score.
fn score(m: &ChainMatch, port: u16, hello: &ClientHello) -> Option<u32> {
    let mut s = 0;
    if let Some(p) = m.destination_port {
        if p != port {
            return None;
        }
        s += 1000;
    }
    if !m.server_names.is_empty() {
        let sni = hello.sni.as_deref()?;
        let best = m
            .server_names
            .iter()
            .filter_map(|n| {
                if n == sni {
                    Some(200 + n.len() as u32)
                } else if let Some(suffix) = n.strip_prefix('*') {
                    (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(100 + n.len() as u32)
                } else {
                    None
                }
            })
            .max()?;
        s += best.min(999 - 100);
    }
    if let Some(tp) = &m.transport_protocol {
        if *tp != hello.transport_protocol() {
            return None;
        }
        s += 1;
    }
    if !m.application_protocols.is_empty() {
        if !hello.alpn.iter().any(|a| m.application_protocols.contains(a)) {
            return None;
        }
        s += 1;
    }
    Some(s * 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(alpn: &[&str]) -> ClientHello {
        ClientHello { tls: true, sni: Some("a.test".into()), alpn: alpn.iter().map(|a| a.to_string()).collect() }
    }

    #[test]
    fn application_protocols_match_the_offered_alpn() {
        let m = ChainMatch { application_protocols: vec!["h2".into(), "istio".into()], ..Default::default() };
        assert!(score(&m, 443, &hello(&["http/1.1", "h2"])).is_some());
        assert!(score(&m, 443, &hello(&["http/1.1"])).is_none());
        assert!(score(&m, 443, &ClientHello::plaintext()).is_none());
        // A chain that asks for an ALPN is more specific than one that does not.
        let any = ChainMatch::default();
        assert!(score(&m, 443, &hello(&["h2"])) > score(&any, 443, &hello(&["h2"])));
    }
}
