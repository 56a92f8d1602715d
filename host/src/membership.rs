//! Cluster and member identities, derived from the bootstrap flags the way
//! etcd derives them, so the same flags give the same ids.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

use crate::config::ServerConfig;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Clone, Debug)]
pub struct Membership {
    pub cluster_id: u64,
    pub local_id: u64,
    pub members: Vec<Member>,
}

/// sha1 over the sorted peer URLs and the cluster token, first 8 bytes.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("sha1 has 20 bytes"))
}

/// sha1 over the sorted member ids, first 8 bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("sha1 has 20 bytes"))
}

impl Membership {
    pub fn from_config(cfg: &ServerConfig) -> Result<Self> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in cfg.initial_cluster().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| Error::InvalidRequest(format!("--initial-cluster entry {part:?} is not name=url")))?;
            by_name.entry(name.to_string()).or_default().push(url.to_string());
        }
        let Some(own_urls) = by_name.get(&cfg.name) else {
            return Err(Error::InvalidRequest(format!(
                "couldn't find local name {:?} in the initial cluster configuration",
                cfg.name
            )));
        };
        let local_id = member_id(own_urls, &cfg.initial_cluster_token);
        let mut advertised = cfg.initial_advertise_peer_urls.clone();
        advertised.sort();
        let mut own = own_urls.clone();
        own.sort();
        if advertised != own {
            return Err(Error::InvalidRequest(format!(
                "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
                cfg.name,
                own.join(","),
                advertised.join(",")
            )));
        }
        let members: Vec<Member> = by_name
            .into_iter()
            .map(|(name, peer_urls)| {
                let local = name == cfg.name;
                Member {
                    id: member_id(&peer_urls, &cfg.initial_cluster_token),
                    client_urls: if local { cfg.advertise_client_urls.clone() } else { Vec::new() },
                    name,
                    peer_urls,
                    is_learner: false,
                }
            })
            .collect();
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        Ok(Membership {
            cluster_id: cluster_id(&ids),
            local_id,
            members,
        })
    }
}
