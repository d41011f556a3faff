//! MTU arithmetic shared by the audit (`tracer check`) and the verdict: what each
//! encapsulation adds, and what the inner (pod) MTU must be for a given outer MTU.

/// An encapsulation that adds bytes to every packet crossing nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Overlay {
    /// IPv4-in-IPv4 (Calico `tunl0`): one outer IPv4 header.
    Ipip,
    /// VXLAN: outer IP + UDP 8 + VXLAN 8 + inner Ethernet 14.
    Vxlan,
    /// WireGuard: outer IP + UDP 8 + WireGuard 32 (header 16 + auth tag 16).
    Wireguard,
    /// GENEVE without options: outer IP + UDP 8 + GENEVE 8 + inner Ethernet 14.
    Geneve,
    /// No encapsulation (routed / host-gw / BGP).
    None,
}

impl Overlay {
    /// Bytes added per packet, for an IPv4 (`outer_v6 = false`) or IPv6 underlay.
    pub fn overhead(self, outer_v6: bool) -> u32 {
        let ip = if outer_v6 { 40 } else { 20 };
        match self {
            Overlay::Ipip => ip,
            Overlay::Vxlan | Overlay::Geneve => ip + 8 + 8 + 14,
            Overlay::Wireguard => ip + 8 + 32,
            Overlay::None => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Overlay::Ipip => "IPIP",
            Overlay::Vxlan => "VXLAN",
            Overlay::Wireguard => "WireGuard",
            Overlay::Geneve => "GENEVE",
            Overlay::None => "no encapsulation",
        }
    }

    /// The largest inner packet that fits an outer path MTU.
    pub fn inner_mtu(self, path_mtu: u32, outer_v6: bool) -> u32 {
        path_mtu.saturating_sub(self.overhead(outer_v6))
    }
}

/// The smallest MTU IPv6 allows on any link (RFC 8200): an IPv6 inner MTU below it is no fix.
pub const IPV6_MIN_MTU: u32 = 1280;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overheads_are_the_cnis_numbers() {
        // Calico documents 20 (IPIP), 50 (VXLAN), 60 (WireGuard) over IPv4; 70 / 80 over IPv6.
        assert_eq!(Overlay::Ipip.overhead(false), 20);
        assert_eq!(Overlay::Vxlan.overhead(false), 50);
        assert_eq!(Overlay::Vxlan.overhead(true), 70);
        assert_eq!(Overlay::Wireguard.overhead(false), 60);
        assert_eq!(Overlay::Wireguard.overhead(true), 80);
        assert_eq!(Overlay::Geneve.overhead(false), 50);
        assert_eq!(Overlay::None.overhead(true), 0);
    }

    #[test]
    fn inner_mtu_is_path_minus_overhead() {
        assert_eq!(Overlay::Ipip.inner_mtu(1450, false), 1430);
        assert_eq!(Overlay::Vxlan.inner_mtu(1450, false), 1400);
        assert_eq!(Overlay::Vxlan.inner_mtu(9001, false), 8951);
        assert_eq!(Overlay::Ipip.inner_mtu(10, false), 0);
    }
}
