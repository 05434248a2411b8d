//! Networks in Docker's shape: list, inspect, create, connect, disconnect, remove, prune.
//! Pier's bridge networks map one to one; Docker's predefined `host` and `none` are shown
//! too (they are modes of a container in Pier, not records), and cannot be removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_api::networks::{NetworkConnect, NetworkCreate, NetworkInspect};
use pier_api::ErrorKind;
use pier_api::{Ipv4Address, Ipv4Net};
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{check_filters, label_matches, parse_time, Params};
use super::system::emit;
use super::{blocking, container, json, DResult, DState, Docker, DockerError};
use crate::api::Ctx;
use pier_api::docker::create::EndpointConfig;
use pier_api::ProjectName;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

const PREDEFINED: [&str; 2] = ["host", "none"];

fn predefined_json(name: &str) -> Value {
    let driver = if name == "none" { "null" } else { name };
    json!({
        "Name": name,
        "Id": super::derived_id(&["predefined network", name], 64),
        "Created": super::ZERO_TIME,
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

/// A network as Docker shows it; `containers` fills in `Containers`.
fn network_json(
    d: &Docker,
    n: &NetworkInspect,
    with_containers: bool,
    project: &ProjectName,
) -> Value {
    let mut ipam = json!({"Subnet": n.subnet, "Gateway": n.gateway});
    if let Some(r) = &n.ip_range {
        ipam["IPRange"] = json!(r);
    }
    // Only the options given, as Docker shows them (compose compares them with its own).
    let mut options = n.options.clone();
    if n.name == pier_engine::networks::DEFAULT_NETWORK {
        options.insert(
            "com.docker.network.bridge.default_bridge".into(),
            "true".into(),
        );
        options.insert("com.docker.network.bridge.name".into(), n.bridge.clone());
        options.insert("com.docker.network.driver.mtu".into(), n.mtu.to_string());
    }
    let mut containers = BTreeMap::new();
    if with_containers {
        for (id, ep) in &n.containers {
            let name = d
                .engine
                .containers
                .get(&project.clone(), id)
                .map(|c| c.name)
                .unwrap_or_else(|_| ep.name.clone());
            let mac = ep.mac_address.map(|m| m.to_string()).unwrap_or_default();
            let addr = match (&ep.ip_address, ep.prefix_len) {
                (Some(ip), Some(len)) => format!("{ip}/{len}"),
                (Some(ip), None) => ip.to_string(),
                _ => String::new(),
            };
            let eid = d
                .engine
                .containers
                .get(&project.clone(), id)
                .map(|c| pier_api::docker::container::endpoint_json(&c, ep)["EndpointID"].clone())
                .unwrap_or(Value::Null);
            containers.insert(
                id.clone(),
                json!({"Name": name, "EndpointID": eid, "MacAddress": mac, "IPv4Address": addr, "IPv6Address": ""}),
            );
        }
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": [ipam]},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

/// Finds a network, with Docker's "not found" message.
fn network(d: &Docker, name: &str, project: &ProjectName) -> DResult<NetworkInspect> {
    d.engine
        .containers
        .networks
        .inspect(&project.clone(), name)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => DockerError::not_found(format!("network {name} not found")),
            _ => e.into(),
        })
}

/// `GET /networks?filters=`.
async fn list(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(
        &filters,
        &["name", "id", "label", "driver", "type", "scope", "dangling"],
    )?;
    let ctx_project = ctx.project.clone();
    let v = blocking(move || {
        let nets = d.engine.containers.networks.list(&ctx_project.clone())?;
        let used: std::collections::HashSet<String> = d
            .engine
            .containers
            .inspect_all(&ctx_project.clone())?
            .iter()
            .flat_map(|c| c.networks.values().map(|e| e.network_id.clone()))
            .collect();
        let mut out = Vec::new();
        let mut all: Vec<Value> = nets
            .iter()
            .map(|n| network_json(&d, n, false, &ctx_project))
            .collect();
        all.extend(PREDEFINED.iter().map(|n| predefined_json(n)));
        for v in all {
            let name = v["Name"].as_str().unwrap_or("").to_string();
            let id = v["Id"].as_str().unwrap_or("").to_string();
            let labels: BTreeMap<String, String> =
                serde_json::from_value(v["Labels"].clone()).unwrap_or_default();
            let builtin = name == pier_engine::networks::DEFAULT_NETWORK
                || PREDEFINED.contains(&name.as_str());
            let f = |key: &str, test: &dyn Fn(&str) -> bool| {
                filters
                    .get(key)
                    .is_none_or(|vals| vals.is_empty() || vals.iter().any(|x| test(x)))
            };
            let keep = f("name", &|x| name.contains(x))
                && f("id", &|x| id.starts_with(x))
                && filters
                    .get("label")
                    .is_none_or(|vals| vals.iter().all(|x| label_matches(&labels, x)))
                && f("driver", &|x| v["Driver"] == x)
                && f("type", &|x| {
                    (x == "builtin") == builtin && (x == "builtin" || x == "custom")
                })
                && f("scope", &|x| x == "local")
                && f("dangling", &|x| {
                    let dangling = !builtin && !used.contains(&id);
                    (x == "true" || x == "1") == dangling
                });
            if keep {
                out.push(v);
            }
        }
        Ok(Value::Array(out))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

/// `GET /networks/{id}`.
async fn inspect(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    if PREDEFINED.contains(&id.as_str()) {
        return Ok(json(StatusCode::OK, predefined_json(&id)));
    }
    let ctx_project = ctx.project.clone();
    let v = blocking(move || {
        let n = network(&d, &id, &ctx_project)?;
        Ok(network_json(&d, &n, true, &ctx_project))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamPool {
    subnet: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
    gateway: Option<String>,
    auxiliary_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    driver: Option<String>,
    config: Option<Vec<IpamPool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    internal: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    config_only: Option<bool>,
    ingress: Option<bool>,
}

/// `POST /networks/create`.
async fn create(Ctx(ctx): Ctx, state: DState, body: Bytes) -> DResult<Response> {
    let d = state.0;
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid network config: {e}")))?;
    let name = b
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DockerError::bad_request("the network needs a Name"))?;
    if b.enable_ipv6.unwrap_or(false) {
        return Err(DockerError::bad_request(
            "IPv6 networks are not supported by pier yet: create the network without --ipv6",
        ));
    }
    if b.config_only.unwrap_or(false) || b.ingress.unwrap_or(false) {
        return Err(DockerError::bad_request(
            "config-only and ingress networks are swarm features; pier does not do swarm mode",
        ));
    }
    match b.driver.as_deref() {
        None | Some("") | Some("bridge") => {}
        Some(other) => {
            return Err(DockerError::bad_request(format!(
                "network driver {other:?} is not supported by pier: use bridge"
            )))
        }
    }
    let ipam = b.ipam.unwrap_or_default();
    if let Some(drv) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(DockerError::bad_request(format!(
            "IPAM driver {drv:?} is not supported by pier: use the default"
        )));
    }
    let pools = ipam.config.unwrap_or_default();
    if pools.len() > 1 {
        return Err(DockerError::bad_request(
            "pier networks have one IPv4 subnet: give at most one --subnet",
        ));
    }
    let pool = pools.into_iter().next().unwrap_or_default();
    if pool.subnet.as_deref().is_some_and(|s| s.contains(':')) {
        return Err(DockerError::bad_request(
            "IPv6 subnets are not supported by pier yet",
        ));
    }
    if pool.auxiliary_addresses.is_some_and(|a| !a.is_empty()) {
        return Err(DockerError::bad_request(
            "--aux-address is not supported by pier yet",
        ));
    }
    let cidr = |s: Option<String>| -> DResult<Option<Ipv4Net>> {
        s.filter(|s| !s.is_empty())
            .map(|s| s.parse::<Ipv4Net>())
            .transpose()
            .map_err(|e| DockerError::bad_request(e.to_string()))
    };
    let gateway = pool
        .gateway
        .filter(|s| !s.is_empty())
        .map(|g| g.parse::<Ipv4Address>())
        .transpose()
        .map_err(|e| DockerError::bad_request(format!("gateway {e}")))?;
    let req = NetworkCreate {
        name: name.clone(),
        driver: Some("bridge".into()),
        subnet: cidr(pool.subnet)?,
        gateway,
        ip_range: cidr(pool.ip_range)?,
        internal: b.internal.unwrap_or(false),
        options: b.options.unwrap_or_default(),
        labels: b.labels.unwrap_or_default(),
    };
    let n = d
        .engine
        .containers
        .networks
        .create(&ctx.project.clone(), req)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict if e.message().contains("already exists") => {
                DockerError::conflict(format!("network with name {name} already exists"))
            }
            ErrorKind::Conflict if e.message().contains("predefined") => DockerError::new(
                StatusCode::FORBIDDEN,
                format!("operation is not permitted on predefined {name} network"),
            ),
            _ => e.into(),
        })?;
    emit(
        &d,
        "network",
        "create",
        &n.id,
        &[("name", &n.name), ("type", "bridge")],
        &ctx.project,
    );
    Ok(json(
        StatusCode::CREATED,
        json!({"Id": n.id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}`.
async fn remove(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    if PREDEFINED.contains(&id.as_str()) || id == pier_engine::networks::DEFAULT_NETWORK {
        return Err(DockerError::new(
            StatusCode::FORBIDDEN,
            format!("{id} is a pre-defined network and cannot be removed"),
        ));
    }
    let n = network(&d, &id, &ctx.project)?;
    d.engine
        .containers
        .networks
        .remove(&ctx.project.clone(), &n.id)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict => DockerError::new(
                StatusCode::FORBIDDEN,
                format!("error while removing network: {}", e.message()),
            ),
            _ => e.into(),
        })?;
    emit(
        &d,
        "network",
        "destroy",
        &n.id,
        &[("name", &n.name), ("type", "bridge")],
        &ctx.project,
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointConfig>,
    force: Option<bool>,
}

/// `POST /networks/{id}/connect`.
async fn connect(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    body: Bytes,
) -> DResult<Response> {
    let d = state.0;
    let b: ConnectBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid connect request: {e}")))?;
    if PREDEFINED.contains(&id.as_str()) {
        return Err(DockerError::bad_request(format!(
            "a running container cannot be connected to the {id} network: choose it when the container is created"
        )));
    }
    let n = network(&d, &id, &ctx.project)?;
    let c = container(&d, &b.container, &ctx.project)?;
    let ep = b.endpoint_config.unwrap_or_default();
    let req = NetworkConnect {
        container: c.id.clone(),
        ip: ep.ip()?,
        aliases: ep.aliases(),
    };
    d.engine
        .containers
        .connect(&ctx.project.clone(), &n.id, req)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict if e.message().contains("already on network") => DockerError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "endpoint with name {} already exists in network {}",
                    c.name, n.name
                ),
            ),
            _ => e.into(),
        })?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/{id}/disconnect`.
async fn disconnect(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    body: Bytes,
) -> DResult<Response> {
    let d = state.0;
    let b: ConnectBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid disconnect request: {e}")))?;
    // `Force` changes nothing: a disconnect never waits on the container.
    let n = network(&d, &id, &ctx.project)?;
    let c = container(&d, &b.container, &ctx.project)?;
    d.engine
        .containers
        .disconnect(&ctx.project.clone(), &n.id, &c.id)
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/prune?filters=`.
async fn prune(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, &["label", "until"])?;
    let until = filters
        .get("until")
        .and_then(|v| v.first())
        .map(|u| {
            parse_time(u).ok_or_else(|| DockerError::bad_request(format!("invalid until {u:?}")))
        })
        .transpose()?;
    let used: std::collections::HashSet<String> = d
        .engine
        .containers
        .inspect_all(&ctx.project.clone())?
        .iter()
        .flat_map(|c| c.networks.values().map(|e| e.network_id.clone()))
        .collect();
    let mut deleted = Vec::new();
    for n in d.engine.containers.networks.list(&ctx.project.clone())? {
        let keep = n.name == pier_engine::networks::DEFAULT_NETWORK
            || used.contains(&n.id)
            || !filters
                .get("label")
                .is_none_or(|v| v.iter().all(|x| label_matches(&n.labels, x)))
            || until.is_some_and(|u| super::unix(Some(&n.created)) as f64 >= u);
        if keep {
            continue;
        }
        if d.engine
            .containers
            .networks
            .remove(&ctx.project.clone(), &n.id)
            .await
            .is_ok()
        {
            emit(
                &d,
                "network",
                "destroy",
                &n.id,
                &[("name", &n.name), ("type", "bridge")],
                &ctx.project,
            );
            deleted.push(n.name);
        }
    }
    Ok(json(StatusCode::OK, json!({"NetworksDeleted": deleted})))
}
