//! Turns endpoint names into socket addresses in the background. pingora's `HttpPeer::new`
//! would do a blocking lookup on a worker thread and panic when it fails; here a name that does
//! not resolve only makes its revision unavailable.

use crate::state::Resolved;
use routes::Endpoint;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves every endpoint. A name whose lookup fails keeps the addresses it had in `previous`
/// (a DNS hiccup should not take a revision down); one that never resolved gets no address
/// (its revisions are unavailable) and is logged.
pub async fn resolve_all<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    previous: &Resolved,
) -> Resolved {
    resolve_with(endpoints, previous, system_lookup).await
}

/// Like [`resolve_all`], but only names `previous` has never looked up are looked up, and
/// those without an address when `retry` says so; the rest keep what they have (the periodic
/// refresh looks everything up again). A rebuild after one changed object of 10,000 must not
/// wait for 20,000 lookups, nor for the timeout of a name that does not resolve.
/// When nothing needs a lookup (the usual change), `previous` itself is returned: no copy of
/// 20,000 entries. Names the table no longer has stay until the next refresh.
pub async fn resolve_new<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    previous: &Arc<Resolved>,
    retry: impl Fn(&Endpoint) -> bool,
) -> Arc<Resolved> {
    resolve_new_with(endpoints, previous, retry, system_lookup).await
}

async fn resolve_new_with<'a, F, Fut>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    previous: &Arc<Resolved>,
    retry: impl Fn(&Endpoint) -> bool,
    lookup: F,
) -> Arc<Resolved>
where
    F: Fn(String, u16) -> Fut,
    Fut: std::future::Future<Output = LookupResult> + Send + 'static,
{
    let pending: Vec<&Endpoint> = endpoints
        .into_iter()
        .filter(|ep| match previous.get(*ep) {
            None => true,
            Some(addrs) => addrs.is_empty() && retry(ep),
        })
        .collect();
    if pending.is_empty() {
        return previous.clone();
    }
    let found = resolve_with(pending, previous, lookup).await;
    let mut out = (**previous).clone();
    out.extend(found);
    Arc::new(out)
}

type LookupResult = std::io::Result<Vec<SocketAddr>>;

async fn system_lookup(host: String, port: u16) -> LookupResult {
    Ok(tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect())
}

/// [`resolve_all`] with the lookup passed in, so tests need no DNS server.
async fn resolve_with<'a, F, Fut>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    previous: &Resolved,
    lookup: F,
) -> Resolved
where
    F: Fn(String, u16) -> Fut,
    Fut: std::future::Future<Output = LookupResult> + Send + 'static,
{
    let mut out = Resolved::new();
    let mut lookups = JoinSet::new();
    for ep in endpoints {
        if let Some(addr) = literal(ep) {
            out.insert(ep.clone(), Arc::from([addr]));
            continue;
        }
        let ep = ep.clone();
        let pending = lookup(ep.host.clone(), ep.port);
        lookups.spawn(async move {
            let found = tokio::time::timeout(LOOKUP_TIMEOUT, pending).await;
            let result = match found {
                Ok(Ok(mut addrs)) => {
                    addrs.sort();
                    addrs.dedup();
                    if addrs.is_empty() {
                        Err("no addresses".to_string())
                    } else {
                        Ok(addrs)
                    }
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("timed out after {LOOKUP_TIMEOUT:?}")),
            };
            (ep, result)
        });
    }
    while let Some(joined) = lookups.join_next().await {
        let Ok((ep, result)) = joined else { continue };
        match result {
            Ok(addrs) => {
                out.insert(ep, Arc::from(addrs));
            }
            Err(why) => match previous.get(&ep) {
                Some(old) if !old.is_empty() => {
                    tracing::warn!(endpoint = %ep, error = %why, "lookup failed; keeping the last addresses");
                    out.insert(ep, old.clone());
                }
                _ => {
                    tracing::warn!(endpoint = %ep, error = %why, "lookup failed; revisions on this endpoint are unavailable");
                    // No address, but looked up: a rebuild does not wait for it again.
                    out.insert(ep, Arc::from([]));
                }
            },
        }
    }
    out
}

fn literal(ep: &Endpoint) -> Option<SocketAddr> {
    ep.host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, ep.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    /// Answers `good.test` with two addresses and fails everything else, without any DNS.
    async fn fake(host: String, port: u16) -> LookupResult {
        match host.as_str() {
            "good.test" => Ok(vec![
                SocketAddr::from(([127, 0, 0, 3], port)),
                SocketAddr::from(([127, 0, 0, 2], port)),
                SocketAddr::from(([127, 0, 0, 2], port)),
            ]),
            _ => Err(std::io::Error::other("no such host")),
        }
    }

    /// IP literals need no lookup; names get their sorted, de-duplicated addresses; a name
    /// that does not resolve is left out rather than failing the rest.
    #[tokio::test]
    async fn literals_names_and_failures() {
        let eps = [
            ep("127.0.0.1:9000"),
            ep("[::1]:9001"),
            ep("good.test:9002"),
            ep("bad.test:80"),
        ];
        let r = resolve_with(eps.iter(), &Resolved::new(), fake).await;
        assert_eq!(&*r[&eps[0]], &["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(&*r[&eps[1]], &["[::1]:9001".parse().unwrap()]);
        assert_eq!(
            &*r[&eps[2]],
            &[
                "127.0.0.2:9002".parse().unwrap(),
                "127.0.0.3:9002".parse().unwrap()
            ]
        );
        assert!(r[&eps[3]].is_empty(), "looked up, no address");
    }

    /// A rebuild looks up only names never looked up: known ones (also failed ones) keep what
    /// they have; the refresh looks everything up again.
    #[tokio::test]
    async fn rebuilds_look_up_only_new_names() {
        let (good, bad, new) = (ep("good.test:1"), ep("bad.test:1"), ep("good.test:2"));
        let mut prev = Resolved::new();
        prev.insert(
            good.clone(),
            Arc::from(["127.0.0.7:1".parse::<SocketAddr>().unwrap()]),
        );
        prev.insert(bad.clone(), Arc::from([]));
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counting = |host: String, port: u16| {
            asked.lock().unwrap().push(format!("{host}:{port}"));
            fake(host, port)
        };
        let prev = Arc::new(prev);
        let r = resolve_new_with([&good, &bad, &new], &prev, |_| false, counting).await;
        assert_eq!(*asked.lock().unwrap(), ["good.test:2"]);
        assert_eq!(r[&good], prev[&good]);
        assert!(r[&bad].is_empty());
        assert_eq!(r[&new].len(), 2);
        // Nothing new: the same map, not a copy.
        let same = resolve_new_with([&good, &bad], &prev, |_| false, counting).await;
        assert!(Arc::ptr_eq(&same, &prev));
        // A failed name is retried when the caller says so.
        resolve_new_with([&good, &bad], &prev, |_| true, counting).await;
        assert_eq!(*asked.lock().unwrap(), ["good.test:2", "bad.test:1"]);
        let r = resolve_with([&good, &bad], &prev, counting).await;
        assert_eq!(asked.lock().unwrap().len(), 4);
        assert_eq!(r[&good].len(), 2, "refreshed");
    }

    /// A failed lookup keeps the previous addresses.
    #[tokio::test]
    async fn failure_keeps_previous() {
        let bad = ep("bad.test:80");
        let mut prev = Resolved::new();
        prev.insert(
            bad.clone(),
            Arc::from(["127.0.0.9:80".parse::<SocketAddr>().unwrap()]),
        );
        let r = resolve_with([&bad], &prev, fake).await;
        assert_eq!(r[&bad], prev[&bad]);
    }

    /// The system resolver answers `localhost` from /etc/hosts (no network).
    #[tokio::test]
    async fn system_localhost() {
        let lh = ep("localhost:9002");
        let r = resolve_all([&lh], &Resolved::new()).await;
        assert!(r[&lh]
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 9002));
    }
}
