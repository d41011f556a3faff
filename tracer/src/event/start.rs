//! The head of every event log file (`kind: "start"`): what this run watched and what it could
//! not see. `tracer report` reads it back, so a verdict computed offline knows the same blind
//! spots, namespace names and audit as the live one, and can say "not seen" rather than guess.

use serde::{Deserialize, Serialize};

/// One line of the log, before the events (and again at the head of each rotated file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Start {
    /// RFC 3339 UTC: when tracing started.
    pub ts: String,
    /// Always `"start"`.
    pub kind: String,
    /// The tracer's version.
    pub version: String,
    /// The node this tracer runs on (as the records' `node`).
    pub node: Option<String>,
    /// The running kernel's release.
    pub kernel: String,
    /// Every hook tried, in order, and how it went.
    pub hooks: Vec<HookLine>,
    /// What the run cannot see because of the hooks that did not attach (the `blind:` lines).
    pub blind_spots: Vec<String>,
    /// The network namespaces watched, by inode, with the names the run gave them.
    pub namespaces: Vec<Watched>,
    /// The static MTU audit's problems at start (the `audit:` lines that are problems).
    pub audit: Vec<String>,
    /// Whether path-MTU learning (`pmtu_update`) could be seen, in both families (IPv4 and IPv6
    /// hooks attached): only then does a missing update mean an ICMP never reached a sender.
    /// Logs written before the IPv6 hook say `true` for IPv4 alone.
    pub pmtu_hook: bool,
    /// The addresses of the devices the ingress hook is attached to in the watched namespaces
    /// (the node's own underlay addresses): what its peers' `arrivals` lines call it, so that
    /// logs of several nodes can be joined by node name.
    pub addresses: Vec<std::net::IpAddr>,
    /// How the cluster's CNI is configured, recognised from the objects the run was given
    /// (`--k8s-snapshot` listing them): what a verdict's `change` patches. Null when not known.
    pub cni: Option<crate::fix::CniInstall>,
}

/// One hook attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookLine {
    /// `drops`, `icmp-sent`, `tx`, `rx`, `tcp-retrans`, `pmtu-learned`.
    pub concern: String,
    /// `tp_btf/kfree_skb`, `tcx/egress eth0@node`, ...
    pub method: String,
    /// `attached`, `failed` or `skipped`.
    pub outcome: String,
    /// Why it failed or was skipped.
    pub detail: Option<String>,
}

/// A watched network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub inode: u32,
    pub name: String,
}

pub const KIND: &str = "start";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_line_reads_back_and_tolerates_missing_and_unknown_fields() {
        let s = Start {
            ts: "2026-12-04T05:00:00.000000000Z".into(),
            kind: KIND.into(),
            version: "0.1.0".into(),
            node: Some("worker-116".into()),
            kernel: "6.18.44".into(),
            hooks: vec![HookLine {
                concern: "pmtu-learned".into(),
                method: "fentry/__ip_rt_update_pmtu".into(),
                outcome: "failed".into(),
                detail: Some("kernel refuses fentry".into()),
            }],
            blind_spots: vec!["path-MTU learning".into()],
            namespaces: vec![Watched {
                inode: 4026532175,
                name: "lab-old".into(),
            }],
            audit: vec!["pod MTU 1500 + VXLAN 50 = 1550 > 1500".into()],
            pmtu_hook: false,
            addresses: vec!["10.213.0.1".parse().unwrap()],
            // flannel's: the one with the most fields (its net-conf.json travels too).
            cni: crate::fix::recognise(&[serde_json::json!({
                "kind": "ConfigMap",
                "metadata": {"name": "kube-flannel-cfg", "namespace": "kube-flannel"},
                "data": {"net-conf.json": "{\"Network\": \"10.244.0.0/16\", \"Backend\": {\"Type\": \"vxlan\"}}"}
            })]),
        };
        assert!(s.cni.is_some());
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.starts_with(r#"{"ts":"2026-12-04T05:00:00.000000000Z","kind":"start","#));
        assert_eq!(serde_json::from_str::<Start>(&line).unwrap(), s);
        // A newer version's line (more fields) and an older one (fewer) both read.
        let newer = line.replacen('{', r#"{"probe_limits":{"max":3},"#, 1);
        assert_eq!(serde_json::from_str::<Start>(&newer).unwrap(), s);
        let older: Start = serde_json::from_str(r#"{"ts":"x","kind":"start"}"#).unwrap();
        assert!(older.namespaces.is_empty() && !older.pmtu_hook && older.addresses.is_empty());
    }
}
