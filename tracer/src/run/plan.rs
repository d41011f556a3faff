//! The command line resolved once, before anything is loaded: which namespaces are watched
//! (named, with their inodes), which devices are hooked in each, and where the node's files
//! are. Every later step reads the plan instead of going back to the arguments.
use std::collections::HashMap;

use anyhow::Result;

use crate::{
    cli::RunArgs,
    hooks::transmit::{self, Selection},
    host::HostRoot,
    ifaces,
    netns::{Namespaces, Netns},
};

pub struct Plan {
    /// `--netns`, or the tracer's own namespace.
    pub namespaces: Namespaces,
    /// The devices hooked at start in each namespace (`--iface`, else tunnels and uplinks).
    pub devices: Vec<Selection>,
    /// `--iface` names and patterns: the link watcher also hooks devices that match later.
    pub iface_patterns: Vec<String>,
    /// `--host-root`: where node-local names and the CNI's configuration are read.
    pub host_root: HostRoot,
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
        let devices = transmit::select(&listed, &args.ifaces)?;
        Ok(Plan {
            namespaces,
            devices,
            iface_patterns: args.ifaces.clone(),
            host_root: HostRoot::new(&args.host_root),
        })
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
