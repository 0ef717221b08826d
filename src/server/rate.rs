//! Per-client rate limits on the routes anyone may call without a credential
//! (`/v1/challenge`, `/v1/register`): a token bucket per client IP address, so one
//! client cannot make the server mint challenges or create Runners as fast as it
//! can send, and cannot starve the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The client's address, put on each request by the accept loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Clients remembered at most; full buckets are forgotten first.
const MAX_CLIENTS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct RateConfig {
    /// Requests per second a client may keep up.
    pub per_second: f64,
    /// Requests a client may send at once after a quiet spell.
    pub burst: f64,
}

impl Default for RateConfig {
    /// A registering runner makes two calls per poll (a challenge, a registration):
    /// generous for runners, even several behind one address, and a wall for floods.
    fn default() -> Self {
        Self {
            per_second: 10.0,
            burst: 40.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(RateConfig::default())
    }
}

/// A refused request: 429 with `Retry-After`.
#[derive(Debug)]
pub struct RateLimited {
    pub client: IpAddr,
    pub wait: Duration,
}

impl warp::reject::Reject for RateLimited {}

impl RateLimited {
    pub fn response(&self) -> warp::reply::Response {
        let secs = self.wait.as_secs_f64().ceil().max(1.0);
        let mut res = super::input::ApiError::new(
            warp::http::StatusCode::TOO_MANY_REQUESTS,
            "RateLimited",
            format!("too many requests from {}: retry in {secs}s", self.client),
        )
        .into_response();
        if let Ok(v) = warp::http::HeaderValue::from_str(&format!("{secs}")) {
            res.headers_mut().insert(warp::http::header::RETRY_AFTER, v);
        }
        res
    }
}

/// Passes while the request's client is within its rate; rejects with
/// [`RateLimited`] otherwise. A request without a client address (a test
/// harness) passes.
pub fn limited(
    limiter: std::sync::Arc<RateLimiter>,
) -> impl warp::Filter<Extract = (), Error = warp::Rejection> + Clone {
    use warp::Filter;
    warp::ext::optional::<ClientAddr>()
        .and_then(move |client: Option<ClientAddr>| {
            let verdict = client.map(|c| (c.0, limiter.check(c.0, Instant::now())));
            async move {
                match verdict {
                    Some((client, Err(wait))) => {
                        Err(warp::reject::custom(RateLimited { client, wait }))
                    }
                    _ => Ok(()),
                }
            }
        })
        .untuple_one()
}

#[derive(Debug)]
pub struct RateLimiter {
    config: RateConfig,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(config: RateConfig) -> Self {
        Self {
            config,
            buckets: Mutex::default(),
        }
    }

    /// Take one request from `ip`'s bucket at `now`; `Err(wait)` when it is empty.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let RateConfig { per_second, burst } = self.config;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&ip) {
            let full = |b: &Bucket| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second >= burst
            };
            buckets.retain(|_, b| !full(b));
            if buckets.len() >= MAX_CLIENTS {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate_per_client() {
        let limiter = RateLimiter::new(RateConfig {
            per_second: 2.0,
            burst: 3.0,
        });
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(a, t0), Ok(()));
        }
        let wait = limiter.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another client is not slowed by the first.
        assert_eq!(limiter.check(b, t0), Ok(()));
        // Half a second later one more (2 per second), then empty again.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.check(a, t1), Ok(()));
        assert!(limiter.check(a, t1).is_err());
        // A long quiet spell refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.check(a, t2), Ok(()));
        }
        assert!(limiter.check(a, t2).is_err());
    }
}
