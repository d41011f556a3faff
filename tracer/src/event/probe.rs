//! A path-MTU measurement the run made itself (`kind: "probe"`): when the evidence points at a
//! black hole toward a peer that this node cannot see, a bounded DF probe from the sending
//! node's namespace measures what passes. Logged as its own line so that `tracer report`
//! reaches the same number offline.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub const KIND: &str = "probe";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Probe {
    /// RFC 3339 UTC: when the probe ended.
    pub ts: String,
    /// Always `"probe"`.
    pub kind: String,
    /// The node this tracer runs on (as the records' `node`).
    pub node: Option<String>,
    /// The namespace it was sent from (inode, and the run's name for it).
    pub netns: u32,
    pub netns_name: String,
    /// The address probed: a peer node this node already sends the dying packets to.
    pub to: Option<IpAddr>,
    /// Why (`black hole beyond this node toward 10.213.0.2`).
    pub why: String,
    /// `ok`, `no_reply`, `no_route`, `skipped` (as `tracer check`'s probe).
    pub status: String,
    /// The device the route toward the peer leaves by, its MTU, and whether it is a tunnel
    /// (then the sizes are the tunnel's inner packets: what a pod can send).
    pub via: Option<String>,
    pub local_mtu: Option<u32>,
    pub via_tunnel: bool,
    /// The largest size answered and the smallest lost (IP packets, headers included).
    pub largest_ok: Option<u32>,
    pub smallest_lost: Option<u32>,
    /// The path MTU found (`largest_ok` snapped to a known MTU within the receivers' slack).
    pub path_mtu: Option<u32>,
    /// Whether the search closed to the byte (else the budget ran out between the two).
    pub exact: bool,
    pub sent: u32,
    pub elapsed_ms: u64,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_line_reads_back() {
        let p = Probe {
            ts: "2026-12-04T05:00:00.000000000Z".into(),
            kind: KIND.into(),
            node: Some("worker-116".into()),
            netns: 4026532175,
            netns_name: "lab-old".into(),
            to: Some("10.213.0.2".parse().unwrap()),
            why: "black hole beyond this node".into(),
            status: "ok".into(),
            via: Some("vxlan.calico".into()),
            local_mtu: Some(1450),
            via_tunnel: true,
            largest_ok: Some(1400),
            smallest_lost: Some(1401),
            path_mtu: Some(1400),
            exact: true,
            sent: 30,
            elapsed_ms: 900,
            detail: None,
        };
        let line = serde_json::to_string(&p).unwrap();
        assert!(line.contains(r#""kind":"probe""#), "{line}");
        assert_eq!(serde_json::from_str::<Probe>(&line).unwrap(), p);
    }
}
