use super::*;

/// Feeds the parts as successive reads (what is held is offered again with the next part, as
/// `poll_read` does); returns what hyper would see, the final state and what is still held.
fn run_with(g: &mut Guarded<()>, input: &[&[u8]]) -> Vec<u8> {
    let mut seen = Vec::new();
    for part in input {
        let mut data = std::mem::take(&mut g.held);
        data.extend_from_slice(part);
        let ok = g.process(&data);
        g.held = data.split_off(ok);
        seen.extend_from_slice(&data);
    }
    seen
}

fn guard(codec: Codec) -> Guarded<()> {
    Guarded::new((), codec, Arc::new(Gate::default()), 60 * 1024, 100)
}

fn run(input: &[&[u8]]) -> (Vec<u8>, State) {
    let mut g = guard(Codec::Auto);
    let seen = run_with(&mut g, input);
    (seen, g.state)
}

#[test]
fn plain_requests_pass_unchanged_across_any_split() {
    let req: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    for split in 0..req.len() {
        let (out, state) = run(&[&req[..split], &req[split..]]);
        assert_eq!(out, req, "split at {split}");
        assert_eq!(state, State::Head, "split at {split}");
    }
}

/// The head is handed over (hyper or the router answers it), the gate refuses it, and not one
/// byte after it is.
fn assert_refused_after(prefix: &[u8], bad: &[u8]) {
    let after: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut input = prefix.to_vec();
    input.extend_from_slice(bad);
    input.extend_from_slice(after);
    for split in 0..input.len() {
        let mut g = guard(Codec::Auto);
        let seen = run_with(&mut g, &[&input[..split], &input[split..]]);
        assert!(
            matches!(g.state, State::Failed { .. }),
            "{:?} split at {split}: {:?}",
            String::from_utf8_lossy(bad),
            g.state
        );
        let s = String::from_utf8_lossy(&seen);
        assert!(!s.contains("/smuggled"), "{s:?} split at {split}");
        assert!(seen.len() >= prefix.len(), "the good requests before it pass");
    }
}

#[test]
fn ambiguous_or_invalid_framing_refuses_the_head_and_everything_after_it() {
    let get: &[u8] = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n";
    for bad in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n",
        b"HELLO THERE\r\n\r\n",
    ] {
        assert_refused_after(b"", bad);
        assert_refused_after(get, bad);
    }
    // The HTTP/2 preface is one only as a connection's first bytes.
    assert_refused_after(get, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
}

#[test]
fn malformed_chunked_bodies_fail_the_read_side() {
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000));
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        b"0\r\nx-t: 1\n\r\n",
        b"0\r\nno colon\r\n\r\n",
        long_ext.as_bytes(),
    ] {
        let mut input = head.to_vec();
        input.extend_from_slice(body);
        input.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let (out, state) = run(&[&input]);
        assert_eq!(state, State::Failed { body: true }, "{:?}", String::from_utf8_lossy(body));
        assert!(!String::from_utf8_lossy(&out).contains("/smuggled"));
    }
}

#[test]
fn smuggled_request_in_a_body_is_not_inspected_as_a_head() {
    // The body of the first request happens to look like an ambiguous head: it is body data.
    let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    let mut req = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(body);
    let (out, state) = run(&[&req]);
    assert_eq!(out, req);
    assert_eq!(state, State::Head);
}

#[test]
fn h2_preface_switches_to_passthrough_only_at_the_start_of_an_auto_connection() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04";
    for split in 0..preface.len() {
        let (out, state) = run(&[&preface[..split], &preface[split..]]);
        assert_eq!(state, State::Pass);
        assert_eq!(out, preface);
    }
    let mut g = guard(Codec::Http1);
    run_with(&mut g, &[preface]);
    assert!(matches!(g.state, State::Failed { .. }), "an HTTP/1-only listener parses the preface as HTTP/1");
}

#[test]
fn bytes_after_an_upgrade_request_wait_for_the_answer() {
    let upgrade: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let next: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let mut input = upgrade.to_vec();
    input.extend_from_slice(next);

    // Refused upgrade: what follows is the next request, inspected (and here refused).
    let mut g = guard(Codec::Auto);
    let seen = run_with(&mut g, &[&input]);
    assert_eq!(seen, upgrade);
    assert_eq!(g.state, State::AwaitUpgrade);
    g.gate.start().finish(false);
    g.resume(g.gate.poll_decision(std::task::Waker::noop()).expect("decided"));
    let rest = run_with(&mut g, &[b""]);
    assert!(matches!(g.state, State::Failed { .. }));
    let head_len = next.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(rest, &next[..head_len], "the refused head goes to hyper, to be answered 400, and nothing after it");
    assert!(g.gate.start().refused(), "the router refuses the second request");

    // Accepted upgrade: what follows is tunnel data, passed through untouched.
    let mut g = guard(Codec::Auto);
    run_with(&mut g, &[&input]);
    g.gate.start().finish(true);
    g.resume(g.gate.poll_decision(std::task::Waker::noop()).expect("decided"));
    assert_eq!(run_with(&mut g, &[b""]), next);
    assert_eq!(g.state, State::Pass);
}

#[test]
fn an_earlier_request_finishing_does_not_decide_a_later_upgrade() {
    let input: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nraw";
    let mut g = guard(Codec::Auto);
    run_with(&mut g, &[input]);
    assert_eq!(g.state, State::AwaitUpgrade);
    g.gate.start().finish(false);
    assert_eq!(g.gate.poll_decision(std::task::Waker::noop()), None);
    g.gate.start().finish(true);
    assert_eq!(g.gate.poll_decision(std::task::Waker::noop()), Some(gate::Decision::Tunnel));
}

mod property;
