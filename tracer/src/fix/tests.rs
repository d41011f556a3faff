//! The change for each recorded install (testdata/README.md says where each object comes
//! from): the right object and number, a patch that applies to the recorded object and leaves
//! it valid for its schema, and commands whose patch argument is that patch.
use serde_json::{json, Value};

use super::{change, recognise, Change, MtuMeaning, PodToRestart};

fn items(name: &str) -> Vec<Value> {
    let path = format!("{}/src/fix/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    list["items"].as_array().unwrap().clone()
}

/// RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The single-quoted `-p` argument of a `kubectl patch` command, unquoted as a shell would.
fn patch_argument(command: &str) -> Value {
    let quoted = command.split_once(" -p ").unwrap().1;
    let inner = quoted
        .strip_prefix('\'')
        .unwrap()
        .strip_suffix('\'')
        .unwrap();
    serde_json::from_str(&inner.replace(r"'\''", "'")).unwrap()
}

/// Every field of `value` is one `schema` (an OpenAPI v3 schema) declares, with its type.
fn conforms(value: &Value, schema: &Value, at: &str) -> Result<(), String> {
    let ty = schema["type"].as_str();
    match value {
        Value::Object(o) => {
            if ty != Some("object") {
                return Err(format!("{at}: an object where the schema says {ty:?}"));
            }
            for (k, v) in o {
                let sub = &schema["properties"][k];
                if sub.is_null() {
                    return Err(format!("{at}.{k}: not in the schema"));
                }
                conforms(v, sub, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        Value::Number(n) if ty == Some("integer") && n.is_u64() => {
            let fits = schema["format"] != "int32" || n.as_u64().unwrap() <= i32::MAX as u64;
            fits.then_some(()).ok_or(format!("{at}: beyond int32"))
        }
        Value::String(_) if ty == Some("string") => Ok(()),
        other => Err(format!("{at}: {other} where the schema says {ty:?}")),
    }
}

fn the_change(name: &str, pod_mtu: u32, overhead: u32) -> (Vec<Value>, Change) {
    let objects = items(name);
    let install = recognise(&objects).unwrap_or_else(|| panic!("{name}: not recognised"));
    let pods = [PodToRestart {
        namespace: "shop".into(),
        name: "order-api-7d9f8".into(),
        workload: Some("deployment/order-api".into()),
    }];
    let c = change(&install, pod_mtu, overhead, &pods).unwrap();
    // The command carries the patch, and the last one restarts the pod's workload.
    assert_eq!(patch_argument(&c.commands[0]), c.patch, "{c:#?}");
    assert_eq!(
        c.commands.last().unwrap(),
        "kubectl rollout restart deployment/order-api -n shop"
    );
    (objects, c)
}

#[test]
fn calico_from_the_operator_sets_the_installation_pod_mtu() {
    let (objects, c) = the_change("calico-operator.json", 1400, 50);
    assert_eq!((c.cni.as_str(), c.method.as_str()), ("calico", "operator"));
    assert_eq!(c.value, 1400);
    assert_eq!(
        c.commands,
        [
            r#"kubectl patch installation.operator.tigera.io/default --type merge -p '{"spec":{"calicoNetwork":{"mtu":1400}}}'"#,
            "kubectl rollout restart deployment/order-api -n shop",
        ]
    );
    // Applied to the recorded Installation: the MTU is set, the IP pools are kept, and the
    // result fits the CRD's schema.
    let mut inst = objects[0].clone();
    merge(&mut inst, &c.patch);
    assert_eq!(inst["spec"]["calicoNetwork"]["mtu"], 1400);
    assert_eq!(
        inst["spec"]["calicoNetwork"]["ipPools"][0]["encapsulation"],
        "VXLANCrossSubnet"
    );
    let path = format!(
        "{}/src/fix/testdata/installation-schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = json!({"spec": {"calicoNetwork": {"mtu": inst["spec"]["calicoNetwork"]["mtu"]}}});
    conforms(&spec, &schema["openAPIV3Schema"], "").unwrap();
    // A number the schema would refuse is caught by the check.
    let bad = json!({"spec": {"calicoNetwork": {"mtu": "1400"}}});
    assert!(conforms(&bad, &schema["openAPIV3Schema"], "").is_err());
}

#[test]
fn calico_from_the_manifest_sets_veth_mtu_and_restarts_calico_node() {
    let (objects, c) = the_change("calico-manifest.json", 1400, 50);
    assert_eq!((c.cni.as_str(), c.method.as_str()), ("calico", "manifest"));
    assert_eq!(
        c.commands,
        [
            r#"kubectl patch configmap/calico-config -n kube-system --type merge -p '{"data":{"veth_mtu":"1400"}}'"#,
            "kubectl rollout restart daemonset/calico-node -n kube-system",
            "kubectl rollout status daemonset/calico-node -n kube-system",
            "kubectl rollout restart deployment/order-api -n shop",
        ]
    );
    let mut cm = objects[0].clone();
    // The recorded manifest lets Calico detect the MTU ("0").
    assert_eq!(cm["data"]["veth_mtu"], "0");
    merge(&mut cm, &c.patch);
    // Still a valid ConfigMap (string values), with the rest of its data.
    let typed: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(cm).unwrap();
    let data = typed.data.unwrap();
    assert_eq!(data["veth_mtu"], "1400");
    assert!(data["cni_network_config"].contains("__CNI_MTU__"));
}

#[test]
fn flannel_sets_the_underlay_mtu_in_net_conf_and_keeps_the_rest() {
    let (objects, c) = the_change("flannel.json", 1400, 50);
    assert_eq!(
        (c.cni.as_str(), c.method.as_str()),
        ("flannel", "configmap")
    );
    // flannel's number is the underlay's: it subtracts VXLAN's 50 B itself.
    assert_eq!(c.value, 1450);
    assert_eq!(
        c.commands[1..],
        [
            "kubectl rollout restart daemonset/kube-flannel-ds -n kube-flannel",
            "kubectl rollout status daemonset/kube-flannel-ds -n kube-flannel",
            "kubectl rollout restart deployment/order-api -n shop",
        ]
    );
    assert!(c.commands[0].starts_with("kubectl patch configmap/kube-flannel-cfg -n kube-flannel"));
    let mut cm = objects[0].clone();
    merge(&mut cm, &c.patch);
    let typed: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(cm).unwrap();
    let data = typed.data.unwrap();
    let conf: Value = serde_json::from_str(&data["net-conf.json"]).unwrap();
    assert_eq!(conf["Backend"]["MTU"], 1450);
    assert_eq!(conf["Backend"]["Type"], "vxlan");
    assert_eq!(conf["Network"], "10.244.0.0/16");
    assert_eq!(conf["EnableNFTables"], false);
    assert!(data["cni-conf.json"].contains("\"type\": \"flannel\""));
}

#[test]
fn cilium_sets_the_underlay_mtu_and_restarts_the_agents() {
    let (objects, c) = the_change("cilium.json", 1400, 50);
    assert_eq!((c.cni.as_str(), c.method.as_str()), ("cilium", "configmap"));
    // Cilium's `mtu` is the underlying network's: it sizes the VXLAN tunnel's routes from it.
    assert_eq!(c.value, 1450);
    assert_eq!(
        c.commands,
        [
            r#"kubectl patch configmap/cilium-config -n kube-system --type merge -p '{"data":{"mtu":"1450"}}'"#,
            "kubectl rollout restart daemonset/cilium -n kube-system",
            "kubectl rollout status daemonset/cilium -n kube-system",
            "kubectl rollout restart deployment/order-api -n shop",
        ]
    );
    // The recorded install detects the MTU (no `mtu` key); the patch adds it and keeps the rest.
    assert_eq!(recognise(&objects).unwrap().current, None);
    let mut cm = objects[0].clone();
    merge(&mut cm, &c.patch);
    let typed: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(cm).unwrap();
    let data = typed.data.unwrap();
    assert_eq!(data["mtu"], "1450");
    assert_eq!(data["tunnel"], "vxlan");
    assert_eq!(data.len(), 84);
}

#[test]
fn the_operator_wins_over_a_leftover_manifest_config_and_the_current_number_is_read() {
    let mut objects = items("calico-manifest.json");
    let mut inst = items("calico-operator.json").remove(0);
    inst["spec"]["calicoNetwork"]["mtu"] = json!(1500);
    objects.push(inst);
    let install = recognise(&objects).unwrap();
    assert_eq!(install.method, "operator");
    assert_eq!(install.current, Some(1500));
    assert_eq!(install.meaning, MtuMeaning::Pod);
    // The manifest alone: "0" is detection, not a number.
    assert_eq!(
        recognise(&items("calico-manifest.json")).unwrap().current,
        None
    );
}

#[test]
fn unknown_objects_give_no_change() {
    assert_eq!(recognise(&[]), None);
    let other = json!({"kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": {}});
    assert_eq!(recognise(&[other]), None);
    // A flannel config whose net-conf.json is not JSON cannot be patched field by field.
    let mut broken = items("flannel.json").remove(0);
    broken["data"]["net-conf.json"] = json!("{ not json");
    assert_eq!(recognise(&[broken]), None);
}

/// Each workload rolls once, after the CNI's agent; pods no rollout recreates are named with
/// what does (or that nothing does).
#[test]
fn the_named_pods_restart_by_their_workloads() {
    let install = recognise(&items("calico-manifest.json")).unwrap();
    let pod = |ns: &str, name: &str, workload: Option<&str>| PodToRestart {
        namespace: ns.into(),
        name: name.into(),
        workload: workload.map(Into::into),
    };
    let pods = [
        pod("cache", "redis-0", Some("statefulset/redis")),
        pod(
            "shop",
            "checkout-6b8f7d9c4-lm3np",
            Some("deployment/checkout"),
        ),
        pod(
            "shop",
            "checkout-6b8f7d9c4-qq7rt",
            Some("deployment/checkout"),
        ),
        pod(
            "shop",
            "db-migrate-28411520-9kx7z",
            Some("job/db-migrate-28411520"),
        ),
        pod("shop", "debug-shell", Some("pod/debug-shell")),
        pod("shop", "mystery", None),
    ];
    let c = change(&install, 1400, 50, &pods).unwrap();
    assert_eq!(
        c.commands[3..],
        [
            "kubectl rollout restart deployment/checkout -n shop",
            "kubectl rollout restart statefulset/redis -n cache",
        ]
    );
    for part in [
        "`kubectl delete pod -n shop db-migrate-28411520-9kx7z` (its job/db-migrate-28411520 recreates it)",
        "shop/debug-shell (no controller: recreate it from its manifest)",
        "`kubectl delete pod -n shop mystery` if a controller recreates it (its workload is not known)",
    ] {
        assert!(c.then.contains(part), "{part}\n{}", c.then);
    }
    assert!(!c.then.contains("checkout"), "{}", c.then);
    // All of them rolled: nothing left to name.
    let c = change(&install, 1400, 50, &pods[..3]).unwrap();
    assert!(
        c.then.starts_with("these rollouts recreate the pods"),
        "{}",
        c.then
    );
}

#[test]
fn a_quote_in_the_patch_survives_the_shell() {
    let mut cm = items("flannel.json").remove(0);
    cm["data"]["net-conf.json"] =
        json!(r#"{"Network": "10.244.0.0/16", "Note": "it's", "Backend": {"Type": "vxlan"}}"#);
    let install = recognise(&[cm]).unwrap();
    let c = change(&install, 1400, 50, &[]).unwrap();
    assert_eq!(patch_argument(&c.commands[0]), c.patch);
    assert!(c.then.contains("the pods that talk across"), "{}", c.then);
}

#[test]
fn a_snapshot_keeps_the_cni_objects_and_no_other_config_map() {
    let mut list =
        json!({"apiVersion": "v1", "kind": "List", "items": items("calico-manifest.json")});
    let other = json!({"kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": {"Corefile": ". {}"}});
    list["items"].as_array_mut().unwrap().push(other);
    let (inv, warnings) = crate::k8s::snapshot::parse(&list.to_string()).unwrap();
    assert_eq!(inv.cni_objects.len(), 1, "{:?}", inv.cni_objects);
    assert_eq!(recognise(&inv.cni_objects).unwrap().method, "manifest");
    assert!(
        warnings.iter().any(|w| w.contains("ConfigMap ×1")),
        "{warnings:?}"
    );
    // A typed list's items carry no kind of their own: the list's names it.
    let mut typed =
        json!({"apiVersion": "v1", "kind": "ConfigMapList", "items": items("flannel.json")});
    typed["items"][0].as_object_mut().unwrap().remove("kind");
    let (inv, _) = crate::k8s::snapshot::parse(&typed.to_string()).unwrap();
    assert_eq!(recognise(&inv.cni_objects).unwrap().cni, "flannel");
}

/// The live API reads the Installation as a `DynamicObject`: what it serializes back to is
/// recognised as the object itself is.
#[test]
fn an_installation_read_as_a_dynamic_object_is_recognised() {
    let mut inst = items("calico-operator.json").remove(0);
    inst["spec"]["calicoNetwork"]["mtu"] = json!(1500);
    let dynamic: kube::core::DynamicObject = serde_json::from_value(inst.clone()).unwrap();
    let back = serde_json::to_value(dynamic).unwrap();
    let install = recognise(&[back]).expect("recognised");
    assert_eq!(
        (install.method.as_str(), install.current),
        ("operator", Some(1500))
    );
    assert_eq!(Some(install), recognise(&[inst]));
}
