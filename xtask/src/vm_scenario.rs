//! Scenarios that only a VM kernel can run, asserted from inside the VM by `cargo xtask vm`
//! (`xtask vm-guest SCENARIO`). They are not tests of the host suite: the host kernel lacks what
//! they need (IPIP), and a skipped test would pass there for no reason.

use crate::demo::{final_verdicts, start_tracer, stop_tracer};
use crate::incident::{Incident, IncidentOptions, Overlay, Path as LabPath};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Scenarios by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Calico IPIP (`tunl0`, nopmtudisc) behind a router 1500 → 1450: the old node's tunnel
    /// refuses the pods' 1500-byte DF packets in `ip_tunnel_xmit` and tells the pod 1480, then,
    /// once the router's frag-needed taught it the path's 1450, 1430 (= 1450 − 20 B IPIP).
    IpipTunl0,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::IpipTunl0 => "ipip-tunl0",
        }
    }
}

/// What the kernel relays to the pod: the router's 1450 minus the 20-byte IPIP header.
const IPIP_PMTU: u64 = 1430;
/// Under TCG everything is 10–20 times slower than on the host.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const TRACER_READY: Duration = Duration::from_secs(180);

pub fn run(scenario: Scenario, tracer: &Path) -> Result<()> {
    match scenario {
        Scenario::IpipTunl0 => ipip_tunl0(tracer),
    }
}

fn ipip_tunl0(tracer: &Path) -> Result<()> {
    let started = Instant::now();
    let incident = Incident::up(IncidentOptions {
        prefix: "vmipip".into(),
        path: LabPath::Router,
        overlay: Overlay::Ipip,
        ..IncidentOptions::default()
    })
    .context("bringing up the IPIP incident lab")?;
    println!(
        "ipip-tunl0: lab up in {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        incident.describe()?
    );
    let dir = std::env::temp_dir();
    let snapshot = dir.join("vm-ipip-k8s-snapshot.json");
    std::fs::write(&snapshot, incident.k8s_snapshot())?;
    let log = dir.join("vm-ipip-events.jsonl");
    let mut child = start_tracer(
        tracer,
        &incident.namespaces(),
        &log,
        &snapshot,
        TRACER_READY,
    )?;
    let results = incident.run_clients(CLIENT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    stop_tracer(&mut child);
    drop(incident);
    let results = results?;
    for r in &results {
        println!("ipip-tunl0: client: {r}");
    }

    let text = std::fs::read_to_string(&log)
        .with_context(|| format!("the tracer left no log at {}", log.display()))?;
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |kind: &'static str| events.iter().filter(move |e| e["kind"] == kind);
    let tunnel_drops: Vec<&Value> = of("drop")
        .filter(|e| {
            e["location"]
                .as_str()
                .is_some_and(|l| l.starts_with("ip_tunnel_xmit"))
        })
        .collect();
    let mtus: Vec<u64> = of("icmp_too_big_sent")
        .filter(|e| e["hook"] == "kprobe/__icmp_send")
        .filter_map(|e| e["icmp"]["mtu"].as_u64())
        .collect();
    println!(
        "ipip-tunl0: {} events, {} drops in ip_tunnel_xmit (devices {:?}), frag-needed generated \
         with MTUs {:?}",
        events.len(),
        tunnel_drops.len(),
        tunnel_drops
            .iter()
            .filter_map(|e| e["ifname"].as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        mtus
    );
    // Path-MTU learning (fentry/kprobe on __ip_rt_update_pmtu): the pod's stack recording what
    // the tunnel told it, the node's tunnel lowering the inner route, the node learning the
    // router's 1450 toward the other node.
    let learned: Vec<&Value> = of("pmtu_update").collect();
    println!(
        "ipip-tunl0: {} path-MTU updates: {}",
        learned.len(),
        learned
            .iter()
            .map(|e| format!(
                "netns {} {}→{} mtu {} ({})",
                e["netns"], e["src"], e["dst"], e["mtu"], e["hook"]
            ))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join("; ")
    );
    let verdicts = final_verdicts(&log)?;
    for v in &verdicts {
        println!(
            "ipip-tunl0: verdict: {} {}: {}",
            v["severity"].as_str().unwrap_or("?"),
            v["problem"].as_str().unwrap_or("?"),
            v["summary"].as_str().unwrap_or("?")
        );
    }
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&snapshot);

    if tunnel_drops.is_empty() {
        bail!("no drop in ip_tunnel_xmit was reported: the tunl0 refusal was missed");
    }
    if !tunnel_drops
        .iter()
        .any(|e| e["l3_len"].as_u64() > Some(IPIP_PMTU))
    {
        bail!("the ip_tunnel_xmit drops are not of oversized packets: {tunnel_drops:?}");
    }
    if !mtus.contains(&IPIP_PMTU) {
        bail!(
            "no frag-needed with MTU {IPIP_PMTU} from kprobe/__icmp_send (got {mtus:?}): the \
             tunnel's PMTU relay to the pod was missed"
        );
    }
    if !learned.iter().any(|e| e["mtu"].as_u64() == Some(IPIP_PMTU)) {
        bail!(
            "no pmtu_update with MTU {IPIP_PMTU}: the pod's stack learning the path MTU the \
             tunnel relayed was missed (this kernel has fentry and kprobes)"
        );
    }
    // The tunnel relays the path MTU, so unlike the L2 mismatch this variant heals itself.
    if let Some(r) = results.iter().find(|r| !r.ok) {
        bail!("with ICMP allowed, IPIP relays the path MTU and every request should pass: {r}");
    }
    // So the verdict is path-MTU discovery at work, down to 1430, not a black hole: the pods
    // were told 1480 by the tunnel, then 1430 once the router's 1450 reached it.
    if let Some(v) = verdicts.iter().find(|v| v["severity"] == "problem") {
        bail!("a working path-MTU discovery was called a problem: {v}");
    }
    let recovered = verdicts
        .iter()
        .find(|v| v["problem"] == "pmtud_recovered")
        .with_context(|| {
            format!("no final verdict `pmtud_recovered` (path-MTU discovery works): {verdicts:?}")
        })?;
    if recovered["largest_passing"].as_u64() != Some(IPIP_PMTU) {
        bail!("the verdict's largest passing size is not {IPIP_PMTU}: {recovered}");
    }
    println!("ipip-tunl0: ok");
    Ok(())
}
