//! The MTU the CNI plugin is configured to give pods, from the node's files: the CNI config
//! directory (Calico's `mtu`, any plugin's numeric `mtu`), Calico's auto-detected
//! `/var/lib/calico/mtu`, flannel's `/run/flannel/subnet.env`. A file that cannot be read or
//! parsed becomes a warning: the audit goes on with what it has.
use std::{fs, path::Path};

use serde::Serialize;

use crate::host::HostRoot;

pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub const CALICO_MTU_FILE: &str = "/var/lib/calico/mtu";
pub const FLANNEL_SUBNET_ENV: &str = "/run/flannel/subnet.env";

/// Which CNI a configuration belongs to (it decides how the fix is phrased).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    Calico,
    Flannel,
    Cilium,
    Other,
}

/// One configured pod MTU and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CniMtu {
    pub cni: Cni,
    pub mtu: u32,
    /// The file (as the node sees it) and key, e.g. `/etc/cni/net.d/10-calico.conflist: mtu`.
    pub source: String,
    /// From the first config file in the directory: the one the container runtime uses.
    pub active: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CniFacts {
    /// Config files found, in the order the runtime considers them (lexical).
    pub config_files: Vec<String>,
    pub cnis: Vec<Cni>,
    pub mtus: Vec<CniMtu>,
    pub warnings: Vec<String>,
}

impl CniFacts {
    /// The MTU the active configuration gives new pods.
    pub fn active_mtu(&self) -> Option<&CniMtu> {
        self.mtus
            .iter()
            .find(|m| m.active)
            .or_else(|| self.mtus.first())
    }
}

/// Read every CNI fact under `host`.
pub fn read(host: &HostRoot) -> CniFacts {
    let mut facts = CniFacts::default();
    let dir = host.path(CNI_CONF_DIR);
    let mut files: Vec<_> = match fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            facts
                .warnings
                .push(format!("{CNI_CONF_DIR}: cannot list: {e}"));
            Vec::new()
        }
    };
    // libcni (containerd, CRI-O) takes the first file in lexical order.
    files.sort();
    let calico_mtu_file = read_calico_mtu_file(host, &mut facts.warnings);
    for (i, path) in files.iter().enumerate() {
        let shown = format!(
            "{CNI_CONF_DIR}/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        facts.config_files.push(shown.clone());
        match fs::read_to_string(path) {
            Ok(text) => parse_conf(&text, &shown, i == 0, calico_mtu_file, &mut facts),
            Err(e) => facts.warnings.push(format!("{shown}: cannot read: {e}")),
        }
    }
    let env_path = host.path(FLANNEL_SUBNET_ENV);
    match fs::read_to_string(&env_path) {
        Ok(text) => match parse_flannel_env(&text) {
            Ok(mtu) => {
                let active = facts.cnis.first() == Some(&Cni::Flannel) || facts.cnis.is_empty();
                push_cni(&mut facts.cnis, Cni::Flannel);
                facts.mtus.push(CniMtu {
                    cni: Cni::Flannel,
                    mtu,
                    source: format!("{FLANNEL_SUBNET_ENV}: FLANNEL_MTU"),
                    active,
                });
            }
            Err(e) => facts.warnings.push(format!("{FLANNEL_SUBNET_ENV}: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => facts
            .warnings
            .push(format!("{FLANNEL_SUBNET_ENV}: cannot read: {e}")),
    }
    facts
}

fn push_cni(v: &mut Vec<Cni>, c: Cni) {
    if !v.contains(&c) {
        v.push(c);
    }
}

fn read_calico_mtu_file(host: &HostRoot, warnings: &mut Vec<String>) -> Option<u32> {
    let path = host.path(CALICO_MTU_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => match parse_mtu_value(text.trim()) {
            Some(m) => Some(m),
            None => {
                warnings.push(format!("{CALICO_MTU_FILE}: not an MTU: {:?}", text.trim()));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("{CALICO_MTU_FILE}: cannot read: {e}"));
            None
        }
    }
}

/// An MTU as a config holds it: a number in 68..=65535.
fn parse_mtu_value(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|m| (68..=65535).contains(m))
}

/// One `.conflist` (with `plugins`) or `.conf` (a single plugin).
fn parse_conf(
    text: &str,
    shown: &str,
    active: bool,
    calico_mtu_file: Option<u32>,
    facts: &mut CniFacts,
) {
    let doc: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            facts
                .warnings
                .push(format!("{shown}: not valid JSON ({e}): skipped"));
            return;
        }
    };
    let plugins: Vec<&serde_json::Value> = match doc.get("plugins").and_then(|p| p.as_array()) {
        Some(list) => list.iter().collect(),
        None if doc.get("type").is_some() => vec![&doc],
        None => {
            facts
                .warnings
                .push(format!("{shown}: neither `plugins` nor `type`: skipped"));
            return;
        }
    };
    for p in plugins {
        let ty = p.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let cni = match ty {
            "calico" => Cni::Calico,
            "flannel" => Cni::Flannel,
            "cilium-cni" => Cni::Cilium,
            _ => Cni::Other,
        };
        if cni != Cni::Other {
            push_cni(&mut facts.cnis, cni);
        }
        let field = p.get("mtu");
        // Calico's manifests template the value (`"__CNI_MTU__"`); 0 or no value means the
        // same to Calico's plugin: use what calico-node detected (/var/lib/calico/mtu).
        let placeholder = match field {
            None => true,
            Some(serde_json::Value::Number(n)) => n.as_u64() == Some(0),
            Some(serde_json::Value::String(s)) => s.starts_with("__") && s.ends_with("__"),
            _ => false,
        };
        let number = match field {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let shown_field = field.map_or("unset".to_string(), |f| f.to_string());
        if placeholder {
            if cni != Cni::Calico {
                continue;
            }
            match calico_mtu_file {
                Some(auto) => facts.mtus.push(CniMtu {
                    cni,
                    mtu: auto,
                    source: format!(
                        "{CALICO_MTU_FILE} (auto-detected; {shown} has mtu {shown_field})"
                    ),
                    active,
                }),
                None => facts.warnings.push(format!(
                    "{shown}: calico mtu is {shown_field} and {CALICO_MTU_FILE} is missing: pod MTU unknown"
                )),
            }
            continue;
        }
        match number.and_then(|n| parse_mtu_value(&n.to_string())) {
            Some(mtu) => facts.mtus.push(CniMtu {
                cni,
                mtu,
                source: format!("{shown}: {ty} mtu"),
                active,
            }),
            None => facts.warnings.push(format!(
                "{shown}: {ty} mtu {shown_field} is not a usable MTU: ignored"
            )),
        }
    }
}

/// `FLANNEL_MTU=1450` out of flannel's `subnet.env` (shell `KEY=VALUE` lines).
pub fn parse_flannel_env(text: &str) -> Result<u32, String> {
    let value = text
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == "FLANNEL_MTU")
        .map(|(_, v)| v.trim().trim_matches('"'))
        .ok_or("no FLANNEL_MTU line")?;
    parse_mtu_value(value).ok_or_else(|| format!("FLANNEL_MTU={value} is not an MTU"))
}

/// For tests and callers that already hold a directory: read with `root` as the host root.
pub fn read_under(root: &Path) -> CniFacts {
    read(&HostRoot::new(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throw-away host root with the given files.
    struct Root(std::path::PathBuf);
    impl Root {
        fn new(tag: &str, files: &[(&str, &str)]) -> Root {
            let dir = std::env::temp_dir().join(format!(
                "tracer-cni-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            for (path, text) in files {
                let p = dir.join(path.trim_start_matches('/'));
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, text).unwrap();
            }
            Root(dir)
        }
    }
    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const CALICO_1440: &str = include_str!("testdata/10-calico.conflist");
    const CALICO_TEMPLATED: &str = include_str!("testdata/10-calico-templated.conflist");
    const FLANNEL_CONF: &str = include_str!("testdata/10-flannel.conflist");
    const SUBNET_ENV: &str = include_str!("testdata/subnet.env");

    #[test]
    fn calico_numeric_mtu() {
        let r = Root::new("num", &[("/etc/cni/net.d/10-calico.conflist", CALICO_1440)]);
        let f = read_under(&r.0);
        assert_eq!(f.cnis, [Cni::Calico]);
        let m = f.active_mtu().unwrap();
        assert_eq!((m.cni, m.mtu, m.active), (Cni::Calico, 1440, true));
        assert!(m.source.contains("10-calico.conflist"), "{}", m.source);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    #[test]
    fn calico_templated_mtu_falls_back_to_the_detected_file() {
        let r = Root::new(
            "tpl",
            &[
                ("/etc/cni/net.d/10-calico.conflist", CALICO_TEMPLATED),
                ("/var/lib/calico/mtu", "1430\n"),
            ],
        );
        let f = read_under(&r.0);
        let m = f.active_mtu().unwrap();
        assert_eq!(m.mtu, 1430);
        assert!(m.source.starts_with(CALICO_MTU_FILE), "{}", m.source);
        assert!(m.source.contains("__CNI_MTU__"), "{}", m.source);
        // Without the file the MTU is unknown, and the audit says so.
        let r = Root::new(
            "tpl2",
            &[("/etc/cni/net.d/10-calico.conflist", CALICO_TEMPLATED)],
        );
        let f = read_under(&r.0);
        assert!(f.mtus.is_empty());
        assert!(
            f.warnings[0].contains("__CNI_MTU__") && f.warnings[0].contains("missing"),
            "{:?}",
            f.warnings
        );
    }

    #[test]
    fn flannel_mtu_comes_from_subnet_env() {
        assert_eq!(parse_flannel_env(SUBNET_ENV), Ok(1450));
        assert!(parse_flannel_env("FLANNEL_NETWORK=10.244.0.0/16\n").is_err());
        assert!(parse_flannel_env("FLANNEL_MTU=big\n")
            .unwrap_err()
            .contains("big"));
        let r = Root::new(
            "fl",
            &[
                ("/etc/cni/net.d/10-flannel.conflist", FLANNEL_CONF),
                ("/run/flannel/subnet.env", SUBNET_ENV),
            ],
        );
        let f = read_under(&r.0);
        assert_eq!(f.cnis, [Cni::Flannel]);
        let m = f.active_mtu().unwrap();
        assert_eq!((m.cni, m.mtu), (Cni::Flannel, 1450));
    }

    #[test]
    fn malformed_files_are_warnings_not_failures() {
        let r = Root::new(
            "bad",
            &[
                ("/etc/cni/net.d/05-broken.conflist", "{\"plugins\": [ {"),
                ("/etc/cni/net.d/07-odd.conf", "{\"name\": \"x\"}"),
                (
                    "/etc/cni/net.d/10-calico.conflist",
                    r#"{"plugins":[{"type":"calico","mtu":"huge"}]}"#,
                ),
                ("/var/lib/calico/mtu", "garbage"),
                ("/run/flannel/subnet.env", "FLANNEL_MTU=0\n"),
            ],
        );
        let f = read_under(&r.0);
        assert!(f.mtus.is_empty(), "{:?}", f.mtus);
        let all = f.warnings.join("\n");
        for needle in [
            "05-broken.conflist: not valid JSON",
            "07-odd.conf: neither",
            "mtu \"huge\" is not a usable MTU",
            "/var/lib/calico/mtu: not an MTU",
            "FLANNEL_MTU=0 is not an MTU",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(f.config_files.len(), 3);
    }

    #[test]
    fn only_the_first_config_file_is_active() {
        let r = Root::new(
            "order",
            &[
                (
                    "/etc/cni/net.d/20-bridge.conf",
                    r#"{"type":"bridge","mtu":9000}"#,
                ),
                ("/etc/cni/net.d/10-calico.conflist", CALICO_1440),
            ],
        );
        let f = read_under(&r.0);
        assert_eq!(f.mtus.len(), 2);
        assert_eq!(f.active_mtu().unwrap().mtu, 1440);
        assert!(!f.mtus.iter().find(|m| m.mtu == 9000).unwrap().active);
    }

    #[test]
    fn no_cni_directory_is_no_facts_and_no_warning() {
        let r = Root::new("none", &[("/etc/hostname", "x")]);
        let f = read_under(&r.0);
        assert_eq!(f, CniFacts::default());
    }
}
