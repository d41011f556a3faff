//! What arrived from each peer (`kind: "arrivals"`): the far end's side of the story. The tc
//! ingress program on uplinks counts, per (outer source, outer destination) and per window, the
//! packets that arrived, the largest, and a coarse size histogram, in a per-CPU map; the daemon
//! writes one line per peer per window (never one per packet). A merge across nodes reads
//! "node B received nothing above 1400 B from node A while A sent 1550-byte VXLAN packets" from
//! these lines.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub const KIND: &str = "arrivals";

/// Upper edges (inclusive, IP total length) of the histogram's buckets; one more bucket holds
/// what is larger. Chosen around the MTUs that matter: the IPv4 minimum reassembly size, the
/// IPv6 minimum MTU, common pod MTUs under VXLAN/IPIP/WireGuard, Ethernet, jumbo frames.
pub const SIZE_EDGES: [u32; 7] = tracer_common::ARRIVAL_SIZE_EDGES;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Arrivals {
    /// RFC 3339 UTC: when the window was written (its end).
    pub ts: String,
    /// Always `"arrivals"`.
    pub kind: String,
    /// The node this tracer runs on (as the records' `node`).
    pub node: Option<String>,
    /// Where the packets arrived: namespace inode and name, the uplink.
    pub netns: u32,
    pub netns_name: Option<String>,
    pub device: String,
    /// The outer source (the peer node) and destination (this node's address).
    pub peer: Option<IpAddr>,
    pub local: Option<IpAddr>,
    /// First and last arrival in the window (RFC 3339 UTC).
    pub first_ts: String,
    pub last_ts: String,
    /// Packets and bytes (IP total length) that arrived in the window.
    pub packets: u64,
    pub bytes: u64,
    /// The largest IP packet (total length, outer) that arrived.
    pub max_len: u32,
    /// Packets per size class (not cumulative): `le` is the class's largest size, null for the
    /// last (larger than every edge). Every class is listed, empty ones too.
    pub sizes: Vec<SizeClass>,
}

/// Lines a window writes at most (the busiest first); the rest are summed into one more line
/// that counts them in `left_out`, so that a node with thousands of peers never floods the log.
pub const MAX_LINES_PER_WINDOW: usize = 256;

/// An arrivals line as the daemon writes it: the record, then `left_out`. A reader that wants
/// the record alone reads the line as [`Arrivals`] (unknown fields are ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrivalsLine {
    #[serde(flatten)]
    pub arrivals: Arrivals,
    /// 0, except on the last line of a window in which more (device, peer, local) received
    /// packets than a window writes lines for ([`MAX_LINES_PER_WINDOW`]): how many were left
    /// out. That line sums them (`peer` and `local` null; `device` empty and `netns` 0 unless
    /// they all share one).
    pub left_out: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeClass {
    pub le: Option<u32>,
    pub packets: u64,
}

impl Arrivals {
    /// Classes from per-bucket counts (`SIZE_EDGES.len() + 1` of them).
    pub fn classes(counts: &[u64]) -> Vec<SizeClass> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &packets)| SizeClass {
                le: SIZE_EDGES.get(i).copied(),
                packets,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrivals_line_reads_back() {
        let mut counts = vec![0u64; SIZE_EDGES.len() + 1];
        counts[0] = 12;
        counts[3] = 4;
        let a = Arrivals {
            ts: "2026-12-04T05:01:00.000000000Z".into(),
            kind: KIND.into(),
            node: Some("worker-2".into()),
            netns: 4026532175,
            netns_name: Some("lab-new".into()),
            device: "eth0".into(),
            peer: Some("10.213.0.1".parse().unwrap()),
            local: Some("10.213.0.2".parse().unwrap()),
            first_ts: "2026-12-04T05:00:01.000000000Z".into(),
            last_ts: "2026-12-04T05:00:59.000000000Z".into(),
            packets: 16,
            bytes: 7000,
            max_len: 1450,
            sizes: Arrivals::classes(&counts),
        };
        let line = serde_json::to_string(&a).unwrap();
        assert!(line.contains(r#""kind":"arrivals""#), "{line}");
        assert!(line.contains(r#"{"le":null,"packets":0}"#), "{line}");
        assert_eq!(serde_json::from_str::<Arrivals>(&line).unwrap(), a);
        assert_eq!(a.sizes.len(), 8);
        assert_eq!(
            a.sizes[3],
            SizeClass {
                le: Some(1450),
                packets: 4
            }
        );
    }

    #[test]
    fn a_written_line_ends_with_left_out_and_reads_back_as_the_record() {
        let a = Arrivals {
            kind: KIND.into(),
            peer: Some("10.213.0.1".parse().unwrap()),
            sizes: Arrivals::classes(&[0; SIZE_EDGES.len() + 1]),
            ..Arrivals::default()
        };
        let line = ArrivalsLine {
            arrivals: a.clone(),
            left_out: 3,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(
            text.ends_with(r#"{"le":null,"packets":0}],"left_out":3}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Arrivals>(&text).unwrap(), a);
        assert_eq!(serde_json::from_str::<ArrivalsLine>(&text).unwrap(), line);
    }
}
