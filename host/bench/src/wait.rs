//! Start-up timing: how long until a (re)started cluster serves reads.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::args::Common;
use super::conn::connect_all;
use super::report::{new_histogram, record, Report};
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::RangeRequest;

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_millis(10);

async fn answers(common: &Common, endpoint: &str) -> bool {
    let one = Common {
        endpoints: vec![endpoint.to_string()],
        conns: 1,
        ..common.clone()
    };
    let attempt = async {
        let channels = connect_all(&one).await.ok()?;
        let mut kv = KvClient::new(channels.into_iter().next()?);
        kv.range(RangeRequest {
            key: b"cairn-bench/ready".to_vec(),
            ..Default::default()
        })
        .await
        .ok()
    };
    matches!(tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await, Ok(Some(_)))
}

pub async fn until_ready(common: &Common, timeout: Duration) -> anyhow::Result<Report> {
    let start = Instant::now();
    let mut attempts = 0u64;
    for endpoint in &common.endpoints {
        loop {
            attempts += 1;
            if answers(common, endpoint).await {
                break;
            }
            if start.elapsed() >= timeout {
                bail!("{endpoint} did not answer a linearizable read within {timeout:?}");
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
    let elapsed = start.elapsed();
    let mut latency = new_histogram();
    record(&mut latency, elapsed);
    Ok(Report {
        workload: "wait".into(),
        requests: common.endpoints.len() as u64,
        errors: attempts - common.endpoints.len() as u64,
        first_error: None,
        elapsed,
        latency,
        extra: Vec::new(),
    })
}
