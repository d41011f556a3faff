//! Handing the evidence on, end to end: one run of the real tracer over the incident lab (L2
//! MTU mismatch under a VXLAN overlay) with `--log`, `--pcap` and `--metrics` together. The log
//! holds the drops, Wireshark's own tools read the capture and find the drops' location and pods
//! in the packet comments, and the metrics endpoint, scraped over HTTP while the run goes on,
//! counts them with bounded labels and shows the path's verdict.
mod support;

use std::time::Duration;

use support::{of_kind, read_events, TempLog, Tracer};
use xtask::incident::{Incident, IncidentOptions, OuterDf, Path};

const TIMEOUT: Duration = Duration::from_secs(4);

/// A port nobody listens on now (the tracer binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` over plain HTTP, as Prometheus does; the body.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to --metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_string()
}

/// Samples of `name` as (labels, value), labels as `key="value"` pairs.
fn samples(body: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    body.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .map(|l| {
            let (labels, value) = l.rsplit_once("} ").unwrap();
            let labels = labels
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (labels, value.trim().parse().unwrap())
        })
        .collect()
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn run_tool(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (`cargo xtask setup` installs tshark): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn one_lab_run_gives_a_log_a_capture_and_metrics() {
    let _ = xtask::lab::cleanup_stale("tre");
    let incident = Incident::up(IncidentOptions {
        prefix: xtask::lab::Lab::unique_prefix("tre"),
        path: Path::L2,
        outer_df: OuterDf::Unset,
        filter_icmp: false,
        tunnel_mtu: 1500,
        ..IncidentOptions::default()
    })
    .expect("incident lab");
    let log = TempLog::new("evidence");
    let port = free_port();
    let pcap = std::path::PathBuf::from(format!("{}.pcapng", log.0.display()));
    let snapshot = std::path::PathBuf::from(format!("{}.k8s.json", log.0.display()));
    std::fs::write(&snapshot, incident.k8s_snapshot()).expect("write snapshot");
    let mut args: Vec<String> = vec![
        "--k8s-snapshot".into(),
        snapshot.display().to_string(),
        "--log".into(),
        log.0.display().to_string(),
        "--pcap".into(),
        pcap.display().to_string(),
        "--metrics".into(),
        format!("127.0.0.1:{port}"),
    ];
    for ns in incident.namespaces() {
        args.push("--netns".into());
        args.push(ns);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tracer::start(&args, &[]);

    let post = incident.http_post(1 << 20, TIMEOUT).expect("POST");
    assert!(
        !post.ok && post.timed_out,
        "large POST must time out: {post}"
    );

    // Scraped while tracing: drops counted by device, watched namespace and pod namespace.
    let body = scrape(port);
    let events = samples(&body, "tracer_events_total");
    let drops_counted: f64 = events
        .iter()
        .filter(|(l, _)| {
            label(l, "kind") == "drop"
                && label(l, "device") == incident.old_uplink_if
                && label(l, "netns") == incident.old_node_ns
                && label(l, "namespace") == "shop"
        })
        .map(|(_, v)| v)
        .sum();
    assert!(drops_counted > 0.0, "no drop counted:\n{body}");
    for (labels, _) in &events {
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["kind", "reason", "device", "netns", "namespace"],
            "{body}"
        );
        // Bounded: no address or pod name is a label value.
        for (_, v) in labels {
            assert!(v.parse::<std::net::IpAddr>().is_err(), "{v}: {body}");
            assert!(!v.contains("order-api"), "{v}: {body}");
        }
    }
    let attached = samples(&body, "tracer_hook_attached");
    assert!(
        attached
            .iter()
            .any(|(l, v)| label(l, "concern") == "drops" && *v == 1.0),
        "{body}"
    );
    // The live verdict comes once the evidence is strong; give it a few ticks.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let verdict = loop {
        let body = scrape(port);
        let v = samples(&body, "tracer_verdict")
            .into_iter()
            .find(|(l, _)| label(l, "severity") == "problem");
        match v {
            Some(v) => break v,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            None => panic!("no live problem verdict in the metrics:\n{body}"),
        }
    };
    assert_eq!(label(&verdict.0, "problem"), "mtu_black_hole");
    assert_eq!(label(&verdict.0, "src_node"), "worker-116");
    assert_eq!(label(&verdict.0, "dst_node"), "worker-208");
    assert_eq!(label(&verdict.0, "overlay"), "vxlan");
    assert_eq!(verdict.1, 1.0);
    if let Ok(dump) = std::env::var("TRACER_TEST_DUMP_METRICS") {
        std::fs::write(dump, scrape(port)).unwrap();
    }

    std::thread::sleep(Duration::from_millis(300));
    let (status, _, stderr) = t.stop();
    assert!(
        status.success(),
        "tracer: {status:?}\n{}",
        stderr.join("\n")
    );
    assert!(
        stderr.iter().any(|l| l.starts_with("packet capture: ")),
        "{}",
        stderr.join("\n")
    );

    // The log: drops of the POST's pod flow, refused by the new node's 1450 link.
    let events = read_events(&log.0);
    let drops: Vec<_> = of_kind(&events, "drop")
        .into_iter()
        .filter(|e| e["dport"] == incident.http_port)
        .collect();
    assert!(
        drops.iter().any(|d| d["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("__dev_forward_skb"))),
        "no drop at the veth in the log:\n{}",
        support::dump(&events)
    );

    // The capture, read by Wireshark's tools.
    let pcap_path = pcap.display().to_string();
    let info = run_tool("capinfos", &["-c", "-I", &pcap_path]);
    let packets: usize = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{info}"));
    let size_events = events
        .iter()
        .filter(|e| {
            [
                "drop",
                "oversize_tx",
                "icmp_too_big_sent",
                "icmp_too_big_received",
            ]
            .contains(&e["kind"].as_str().unwrap_or(""))
        })
        .count();
    assert!(
        packets >= drops.len(),
        "{packets} packets < {} drops",
        drops.len()
    );
    assert!(
        packets <= size_events,
        "{packets} packets > {size_events} events"
    );
    let old_if = format!("{}@{}", incident.old_uplink_if, incident.old_node_ns);
    assert!(info.contains(&old_if), "no interface {old_if}:\n{info}");
    let fields = run_tool(
        "tshark",
        &[
            "-r",
            &pcap_path,
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.comment",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.len",
            "-e",
            "tcp.dstport",
            "-Y",
            &format!("tcp.dstport == {}", incident.http_port),
        ],
    );
    let rows: Vec<Vec<&str>> = fields.lines().map(|l| l.split('|').collect()).collect();
    let dropped: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| r[0].starts_with("tracer drop;"))
        .collect();
    assert!(!dropped.is_empty(), "no drop comment:\n{fields}");
    for r in &dropped {
        // The drop's location, as the log has it.
        assert!(
            drops
                .iter()
                .any(|d| r[0].contains(&format!("location: {};", d["location"].as_str().unwrap()))),
            "{r:?}"
        );
        assert!(
            r[0].contains("pods: shop/order-api-7d9f8 -> cache/storage-0"),
            "{r:?}"
        );
        assert!(r[0].contains("service: cache/storage:"), "{r:?}");
        assert!(r[0].contains("mtu: 1450"), "{r:?}");
        assert_eq!(r[1], old_if, "{r:?}");
        // Wireshark decodes through the VXLAN header down to the pod's IPv4 and TCP headers.
        assert_eq!(r[2].split(',').count(), 2, "outer and inner IPv4: {r:?}");
    }
    // Headers only: nothing beyond the inner TCP header (20 + 8 + 8 + 14 + 20 + TCP with options).
    let lens = run_tool(
        "tshark",
        &[
            "-r",
            &pcap_path,
            "-T",
            "fields",
            "-e",
            "frame.cap_len",
            "-e",
            "tcp.hdr_len",
            "-Y",
            "vxlan && tcp",
        ],
    );
    assert!(
        !lens.trim().is_empty(),
        "no VXLAN/TCP packet in the capture"
    );
    for l in lens.lines() {
        let mut it = l.split('\t').map(|v| v.parse::<usize>().unwrap());
        let (cap, tcp_hdr) = (it.next().unwrap(), it.next().unwrap());
        assert_eq!(cap, 70 + tcp_hdr, "{l}");
    }
    let _ = std::fs::remove_file(&pcap);
}

/// `--pcap -` streams the capture to standard output, read as it comes by Wireshark's own
/// reader on the other end of a pipe (`tracer run --pcap - | capinfos -`): every packet the run
/// reports as a drop is in it, and the event lines go to standard error.
#[test]
fn the_capture_streams_to_standard_output_through_a_pipe() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let _ = xtask::lab::cleanup_stale("tev");
    let (lab, s) = xtask::lab::veth_mismatch(&xtask::lab::Lab::unique_prefix("tev")).expect("lab");
    let log = TempLog::new("pcap-stdout");
    let mut tracer = Command::new(support::tracer_bin())
        .args([
            "run",
            "--netns",
            &s.a_ns,
            "--pcap",
            "-",
            "--no-fold",
            "--log",
        ])
        .arg(&log.0)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tracer");
    let capinfos = Command::new("capinfos")
        .args(["-c", "-"])
        .stdin(tracer.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capinfos (`cargo xtask setup` installs tshark)");
    // Ready once it says so on standard error (where its terminal lines go now).
    let mut stderr = BufReader::new(tracer.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in stderr.by_ref().map_while(Result::ok) {
        let ready = line.starts_with("tracing");
        seen.push(line);
        if ready {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("packet headers to stdout")),
        "{seen:#?}"
    );
    let ping = xtask::lab::ping_df(&lab, &s.a_ns, s.b_ip, 1472, 3).expect("ping");
    assert_eq!(
        ping.received, 0,
        "1500-byte pings into the 1450 end must die: {ping:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // SIGINT: the run ends as Ctrl-C ends it, flushing the stream and closing the pipe.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    let status = tracer.wait().expect("tracer exit");
    assert!(status.success(), "{status:?}\n{seen:#?}\n{rest:#?}");
    assert!(
        rest.iter().chain(&seen).any(|l| l.contains("DROP")),
        "the event lines go to standard error:\n{seen:#?}\n{rest:#?}"
    );
    let out = capinfos.wait_with_output().expect("capinfos");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no packet count from capinfos:\n{text}"));
    // Every drop the log holds is a packet of the stream (one event each: --no-fold).
    let drops = support::read_events(&log.0)
        .iter()
        .filter(|e| e["kind"] == "drop")
        .count() as u64;
    assert!(drops >= 3, "{drops} drops");
    assert_eq!(packets, drops, "{text}");
}
