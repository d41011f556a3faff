//! The command line resolved once, before anything is loaded: which namespaces are watched
//! (named, with their inodes), which devices are hooked in each, and where the node's files
//! are. Every later step reads the plan instead of going back to the arguments.
use std::collections::HashMap;

use anyhow::Result;

use crate::{
    cli::RunArgs,
    hooks::select::{self, Selection},
    host::HostRoot,
    ifaces,
    k8s::node_local,
    netns::{Namespaces, Netns},
};

#[derive(Debug)]
pub struct Plan {
    /// `--netns`, or the tracer's own namespace.
    pub namespaces: Namespaces,
    /// The devices hooked at start in each namespace (`--iface`, else tunnels and uplinks).
    pub devices: Vec<Selection>,
    /// `--iface` names and patterns: the link watcher also hooks devices that match later.
    pub iface_patterns: Vec<String>,
    /// `--host-root`: where node-local names and the CNI's configuration are read.
    pub host_root: HostRoot,
    /// This node's name: `--node-name`, else `NODE_NAME` (the DaemonSet sets it from
    /// `spec.nodeName`), else its hostname as the kubelet takes it (unless `--no-node-local`).
    pub node: Option<String>,
}

impl Plan {
    /// Fails on a `--netns` that names no namespace and an `--iface` found in none of them.
    pub fn resolve(args: &RunArgs) -> Result<Plan> {
        let namespaces = Namespaces::resolve(&args.netns)?;
        let mut listed = Vec::new();
        for ns in &namespaces.list {
            let (ifs, defaults) =
                ns.enter(|| Ok((ifaces::list()?, ifaces::default_route_devices())))?;
            listed.push((ns.clone(), ifs, defaults));
        }
        let devices = select::select(&listed, &args.ifaces)?;
        let host_root = HostRoot::new(&args.host_root);
        let env = std::env::var("NODE_NAME").ok();
        let given = args.node_name.as_deref().or(env.as_deref());
        let node = node_name(given, || {
            (!args.no_node_local)
                .then(|| node_local::node_name(&host_root))
                .flatten()
        });
        Ok(Plan {
            namespaces,
            devices,
            iface_patterns: args.ifaces.clone(),
            host_root,
            node,
        })
    }

    /// Stamp this run's records with the node (JSONL `node`).
    pub fn stamp_records(&self) {
        if let Some(node) = &self.node {
            crate::event::set_node(node);
        }
    }

    pub fn watched(&self) -> &[Netns] {
        &self.namespaces.list
    }

    /// Each watched namespace's label by inode, as the outputs name them.
    pub fn labels(&self) -> HashMap<u32, String> {
        self.watched()
            .iter()
            .map(|n| (n.inode, n.label.clone()))
            .collect()
    }
}

/// The name given (`--node-name`, else `NODE_NAME`) when not blank, else what `node_local`
/// finds.
fn node_name(
    from_env: Option<&str>,
    node_local: impl FnOnce() -> Option<String>,
) -> Option<String> {
    match from_env.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => Some(n.to_string()),
        None => node_local(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(extra: &[&str]) -> RunArgs {
        let argv = ["tracer", "run"].iter().chain(extra);
        match Cli::parse_from(argv).command {
            Command::Run(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_plan_names_the_namespaces_devices_and_node() {
        let root = std::env::temp_dir().join(format!("tracer-plan-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        std::fs::write(root.join("proc/sys/kernel/hostname"), "Node-A\n").unwrap();
        let root_arg = root.to_str().unwrap();
        let plan = Plan::resolve(&run_args(&["--iface", "lo", "--host-root", root_arg]));
        let quiet = Plan::resolve(&run_args(&["--host-root", root_arg, "--no-node-local"]));
        let named = Plan::resolve(&run_args(&[
            "--host-root",
            root_arg,
            "--node-name",
            "worker-9",
        ]));
        std::fs::remove_dir_all(&root).unwrap();
        // --node-name wins over the hostname.
        assert_eq!(named.unwrap().node.as_deref(), Some("worker-9"));

        let plan = plan.unwrap();
        assert!(!plan.namespaces.named);
        assert_eq!(plan.watched()[0].label, "root");
        assert_eq!(plan.devices.len(), 1);
        let egress: Vec<&str> = plan.devices[0]
            .egress
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(egress, ["lo"]);
        assert_eq!(plan.iface_patterns, ["lo"]);
        assert_eq!(plan.host_root, HostRoot::new(&root));
        // Lowercased, as the kubelet names its node.
        assert_eq!(plan.node.as_deref(), Some("node-a"));
        assert_eq!(quiet.unwrap().node, None);
    }

    #[test]
    fn node_name_wins_over_the_hostname_unless_blank() {
        let hostname = || Some("worker-116".to_string());
        assert_eq!(
            node_name(Some(" worker-208 "), hostname).as_deref(),
            Some("worker-208")
        );
        assert_eq!(
            node_name(Some(" "), hostname).as_deref(),
            Some("worker-116")
        );
        assert_eq!(node_name(None, hostname).as_deref(), Some("worker-116"));
        assert_eq!(node_name(None, || None), None);
    }

    #[test]
    fn an_iface_found_nowhere_fails_the_plan() {
        let err = Plan::resolve(&run_args(&["--iface", "no-such-dev0"])).unwrap_err();
        assert!(
            format!("{err:#}").contains("--iface no-such-dev0"),
            "{err:#}"
        );
    }
}
