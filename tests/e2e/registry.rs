//! The cluster's private registry (`hack/cluster/registry.sh`): distribution with
//! htpasswd auth on loopback, holding the step image under a private name. Its
//! address and login are in `$BATON_CLUSTER_DIR/registry/credentials`.

use anyhow::Context;
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::support::TestNs;

/// The registry's address, login and private image, as up.sh wrote them.
pub struct Registry {
    pub address: String,
    pub username: String,
    pub password: String,
    pub image: String,
}

pub fn registry() -> anyhow::Result<Registry> {
    let dir =
        std::env::var("BATON_CLUSTER_DIR").unwrap_or_else(|_| "/var/tmp/baton-cluster".into());
    let path = std::path::Path::new(&dir).join("registry/credentials");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read {} (written by hack/cluster/up.sh)", path.display()))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .with_context(|| format!("{} has no {key}=", path.display()))
    };
    Ok(Registry {
        address: field("address")?,
        username: field("username")?,
        password: field("password")?,
        image: field("image")?,
    })
}

/// A `kubernetes.io/dockerconfigjson` Secret logging in to `reg` with `password`.
pub async fn pull_secret(
    ns: &TestNs,
    name: &str,
    reg: &Registry,
    password: &str,
) -> anyhow::Result<()> {
    let login = format!("{}:{password}", reg.username);
    let config = serde_json::json!({ "auths": { &reg.address: {
        "username": reg.username,
        "password": password,
        "auth": base64::engine::general_purpose::STANDARD.encode(login),
    }}});
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_owned(),
                ByteString(serde_json::to_vec(&config)?),
            )]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}
