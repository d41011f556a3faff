//! The lab scenarios behave like the incident (needs root: network namespaces).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xtask::lab::{self, Lab};

/// Namespace family of these tests; leftovers of crashed runs are removed at each start.
const FAMILY: &str = "xtl";

fn start() -> String {
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the lab tests need root (network namespaces)"
    );
    lab::cleanup_stale(FAMILY).expect("cleanup_stale");
    Lab::unique_prefix(FAMILY)
}

fn assert_gone(names: &[String]) {
    let left = lab::list_netns().expect("ip netns list");
    for n in names {
        assert!(!left.contains(n), "namespace {n} survived the lab's Drop");
    }
}

fn read_counter(lab: &Lab, ns: &str, ifname: &str, counter: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
    let out = lab.exec_ok(ns, &["cat", &path]).expect("read counter");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("counter value")
}

#[test]
fn routed_mtu_hop_reports_the_lower_mtu() {
    let t = Instant::now();
    let (lab, s) = lab::routed_mtu_hop(&start()).expect("routed_mtu_hop");
    eprintln!("routed_mtu_hop set up in {:?}", t.elapsed());
    assert_eq!(lab.namespaces().len(), 3);
    assert_eq!(
        lab.link_mtu(&s.router_ns, &s.router_server_if).unwrap(),
        1450
    );

    let small = lab::ping_df(&lab, &s.client_ns, s.server_ip, 56, 1).unwrap();
    assert!(small.success, "{}", small.output);
    let fits = lab::ping_df(&lab, &s.client_ns, s.server_ip, 1400, 1).unwrap();
    assert!(fits.success, "{}", fits.output);
    let big = lab::ping_df(&lab, &s.client_ns, s.server_ip, 1472, 2).unwrap();
    assert!(!big.success, "{}", big.output);
    assert_eq!(big.received, 0, "{}", big.output);
    // The router answers with ICMP frag-needed carrying the next hop's MTU.
    assert!(big.output.contains("mtu = 1450"), "{}", big.output);

    // So TCP learns the path MTU and a large upload still completes.
    let up = lab::tcp_upload(
        &lab,
        &s.client_ns,
        &s.server_ns,
        s.server_ip,
        8080,
        200_000,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(up.completed, "{up:?}");

    let names = lab.namespaces().to_vec();
    drop(lab);
    assert_gone(&names);
}

#[test]
fn veth_mismatch_drops_big_frames_silently() {
    let t = Instant::now();
    let (lab, s) = lab::veth_mismatch(&start()).expect("veth_mismatch");
    eprintln!("veth_mismatch set up in {:?}", t.elapsed());
    assert_eq!(lab.link_mtu(&s.a_ns, &s.a_if).unwrap(), 1500);
    assert_eq!(lab.link_mtu(&s.b_ns, &s.b_if).unwrap(), 1450);

    assert!(lab::ping_df(&lab, &s.a_ns, s.b_ip, 56, 1).unwrap().success);
    assert!(
        lab::ping_df(&lab, &s.a_ns, s.b_ip, 1400, 1)
            .unwrap()
            .success
    );
    let before = read_counter(&lab, &s.a_ns, &s.a_if, "tx_dropped");
    let big = lab::ping_df(&lab, &s.a_ns, s.b_ip, 1472, 2).unwrap();
    assert!(!big.success, "{}", big.output);
    // Silent: no ICMP comes back, the sending veth only counts a TX drop per frame.
    assert!(!big.output.contains("mtu ="), "{}", big.output);
    let after = read_counter(&lab, &s.a_ns, &s.a_if, "tx_dropped");
    assert!(after >= before + 2, "tx_dropped {before} -> {after}");

    // TCP is spared: b advertises an MSS that fits its MTU.
    let up = lab::tcp_upload(
        &lab,
        &s.a_ns,
        &s.b_ns,
        s.b_ip,
        8080,
        200_000,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(up.completed, "{up:?}");

    let names = lab.namespaces().to_vec();
    drop(lab);
    assert_gone(&names);
}

#[test]
fn vxlan_mismatch_hangs_large_uploads_only() {
    let t = Instant::now();
    let (lab, s) = lab::vxlan_mismatch(&start()).expect("vxlan_mismatch");
    eprintln!("vxlan_mismatch set up in {:?}", t.elapsed());
    assert_eq!(lab.namespaces().len(), 4);
    for ns in [&s.node1_ns, &s.node2_ns] {
        assert_eq!(lab.link_mtu(ns, &s.vxlan_if).unwrap(), 1500, "{ns}");
    }
    assert_eq!(
        lab.link_mtu(&s.node2_ns, &s.node2_underlay_if).unwrap(),
        1450
    );

    let small = lab::ping_df(&lab, &s.pod1_ns, s.pod2_ip, 56, 1).unwrap();
    assert!(small.success, "{}", small.output);
    let back = lab::ping_df(&lab, &s.pod2_ns, s.pod1_ip, 56, 1).unwrap();
    assert!(back.success, "{}", back.output);
    // 1400 + 28 + 50 outer bytes no longer fit n2's 1450.
    let big = lab::ping_df(&lab, &s.pod1_ns, s.pod2_ip, 1400, 1).unwrap();
    assert!(!big.success, "{}", big.output);

    let t = Instant::now();
    let up = lab::tcp_upload(
        &lab,
        &s.pod1_ns,
        &s.pod2_ns,
        s.pod2_ip,
        8080,
        1000,
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(up.completed, "small upload: {up:?}");
    assert_eq!(up.bytes_received, 1000);
    eprintln!("small upload took {:?}", t.elapsed());

    let dropped = read_counter(&lab, &s.node1_ns, &s.node1_underlay_if, "tx_dropped");
    let up = lab::tcp_upload(
        &lab,
        &s.pod1_ns,
        &s.pod2_ns,
        s.pod2_ip,
        8081,
        200_000,
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!up.completed && up.timed_out, "large upload: {up:?}");
    // The outer packets die on the underlay veth, where n2's smaller MTU refuses them.
    let after = read_counter(&lab, &s.node1_ns, &s.node1_underlay_if, "tx_dropped");
    assert!(after > dropped, "underlay tx_dropped {dropped} -> {after}");

    let names = lab.namespaces().to_vec();
    drop(lab);
    assert_gone(&names);
}

#[test]
fn drop_cleans_up_after_a_panic_and_kills_spawned_processes() {
    let prefix = start();
    let mut names = Vec::new();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (lab, _) = lab::veth_mismatch(&prefix).unwrap();
        names = lab.namespaces().to_vec();
        // Any assertion failure in a test unwinds through its lab like this.
        panic!("intentional panic: the lab's Drop must still clean up");
    }));
    assert!(unwound.is_err());
    assert_eq!(names.len(), 2);
    assert_gone(&names);

    let (lab, s) = lab::veth_mismatch(&Lab::unique_prefix(FAMILY)).unwrap();
    let mut child = lab.spawn(&s.a_ns, &["sleep", "60"]).unwrap();
    let inode = Lab::netns_inode(&s.a_ns).unwrap();
    let want = format!("net:[{inode}]");
    // `ip netns exec` enters the namespace shortly after the spawn returns.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut link = String::new();
    while link != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        let path = format!("/proc/{}/ns/net", child.id());
        link = std::fs::read_link(path)
            .unwrap()
            .to_string_lossy()
            .into_owned();
    }
    assert_eq!(link, want);
    assert_ne!(inode, Lab::netns_inode(&s.b_ns).unwrap());
    let names = lab.namespaces().to_vec();
    let t = Instant::now();
    drop(lab);
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_gone(&names);
}

#[test]
fn cleanup_stale_spares_live_labs() {
    let live_prefix = start();
    let live = Lab::new(&live_prefix).unwrap();
    // "zzzzz" in base 36 is far above any pid_max: its owner is surely gone.
    let mut stale = Lab::new(&format!("{FAMILY}zzzzz_0")).unwrap();
    let stale_ns = stale.add_netns("x").unwrap();
    stale.keep();
    let mut live = live;
    let live_ns = live.add_netns("x").unwrap();

    let removed = lab::cleanup_stale(FAMILY).unwrap();
    assert!(removed.contains(&stale_ns), "{removed:?}");
    assert!(!removed.contains(&live_ns), "{removed:?}");
    assert_gone(&[stale_ns]);
    assert!(lab::list_netns().unwrap().contains(&live_ns));
    drop(live);
    assert_gone(&[live_ns]);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (lab, s) = lab::veth_mismatch(&start()).unwrap();
    assert!(lab.exec("not-in-this-lab", &["true"]).is_err());
    assert!(lab.exec(&s.a_ns, &[]).is_err());
    assert!(lab
        .spawn(&s.a_ns, &["/no/such/program"])
        .is_ok_and(|mut c| { !c.wait().unwrap().success() }));
    assert!(lab::ping_df(&lab, &s.a_ns, s.b_ip, 70_000, 1).is_err());
    assert!(lab::ping_df(&lab, &s.a_ns, s.b_ip, 56, 0).is_err());
    let z = Duration::ZERO;
    assert!(lab::tcp_upload(&lab, &s.a_ns, &s.b_ns, s.b_ip, 0, 1, Duration::from_secs(1)).is_err());
    assert!(lab::tcp_upload(&lab, &s.a_ns, &s.b_ns, s.b_ip, 8080, 1, z).is_err());
    // A sink that cannot bind (address not in its namespace) is reported as an error.
    let err = lab::tcp_upload(
        &lab,
        &s.a_ns,
        &s.b_ns,
        Ipv4Addr::new(10, 209, 9, 9),
        8080,
        1,
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("did not start"), "{err:#}");
    assert!(Lab::netns_inode("no-such-ns-xtl").is_err());
    assert!(Lab::netns_inode("../etc").is_err());
    assert!(Lab::new("").is_err());
    assert!(Lab::new("much-too-long-prefix").is_err());
}
