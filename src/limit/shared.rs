//! The optional limiter shared by every replica through Redis, applied after
//! the local limits (which are never looser) have passed.
//!
//! One Lua script tests every limit of the request and charges them only if
//! all pass, atomically, on Redis' own clock so replicas' clocks never
//! matter. Until Redis is first reached, a background task keeps trying;
//! after that, redis' `ConnectionManager` reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

/// `[limits]` as validated: where Redis is and what to do without it.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// `redis://[:password@]host:port[/db]`; may hold a password, so it stays secret.
    pub url: SecretString,
    /// The URL with any password removed, for logs and `check`.
    pub display: String,
    /// Let requests through (local limits only) while Redis is unreachable.
    pub fail_open: bool,
    /// How long a limit check may wait for Redis.
    pub timeout: Duration,
    /// Prefix of every Redis key mmgate writes.
    pub prefix: String,
}

impl PartialEq for SharedSettings {
    fn eq(&self, other: &Self) -> bool {
        self.url.expose_secret() == other.url.expose_secret()
            && self.fail_open == other.fail_open
            && self.timeout == other.timeout
            && self.prefix == other.prefix
    }
}

/// One limit as the script sees it.
pub struct Cell<'a> {
    /// The Redis key holding its theoretical arrival time.
    pub key: &'a str,
    /// Microseconds between requests at the sustained rate.
    pub interval_us: u64,
    /// Microseconds a burst may run ahead.
    pub tolerance_us: u64,
    /// Units this request costs (one per GraphQL operation).
    pub cost: u32,
    /// In shadow mode: when it would refuse, it is skipped (not charged) and reported.
    pub shadow: bool,
}

/// What Redis decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every enforced limit passed and was charged; a shadowed one that
    /// would have refused (its index and wait) was skipped.
    Admitted { shadowed: Option<(usize, Duration)> },
    /// Limit number `index` (of the cells given) refused; retry after `wait`.
    Refused { index: usize, wait: Duration },
    /// Redis could not be asked.
    Unavailable,
}

// Returns {0, 0} when admitted, {i, wait_us} for the first refusing cell,
// or {0, 0, i, wait_us} when admitted but shadowed cell i would have refused
// (a shadowed cell that would refuse is not charged).
const GCRA: &str = r#"
pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local shadowed = nil
for i = 1, #KEYS do
  local interval = tonumber(ARGV[4 * i - 3])
  local tolerance = tonumber(ARGV[4 * i - 2])
  local extra = interval * (tonumber(ARGV[4 * i - 1]) - 1)
  local shadow = ARGV[4 * i] == '1'
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  if tat - now + extra > tolerance then
    if not shadow then return {i, tat - now + extra - tolerance} end
    if not shadowed then shadowed = {i, tat - now + extra - tolerance} end
  else
    new[i] = tat + extra + interval
  end
end
for i = 1, #KEYS do
  if new[i] then redis.call('SET', KEYS[i], new[i], 'PX', math.ceil((new[i] - now) / 1000) + 1000) end
end
if shadowed then return {0, 0, shadowed[1], shadowed[2]} end
return {0, 0}
"#;

/// The Redis connection and script; shared across reloads while `[limits]` is unchanged.
pub struct SharedLimiter {
    settings: SharedSettings,
    connection: Arc<ArcSwapOption<ConnectionManager>>,
    script: redis::Script,
    connector: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter").field("redis", &self.settings.display).finish_non_exhaustive()
    }
}

impl Drop for SharedLimiter {
    fn drop(&mut self) {
        self.connector.abort();
    }
}

impl SharedLimiter {
    /// Starts connecting in the background; checks fail (open or closed) until connected.
    pub fn start(settings: SharedSettings) -> Self {
        let connection = Arc::new(ArcSwapOption::empty());
        let slot = Arc::clone(&connection);
        let url = settings.url.clone();
        let shown = settings.display.clone();
        let timeout = settings.timeout;
        let connector = tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match connect(&url, timeout).await {
                    Ok(manager) => {
                        tracing::info!(redis = %shown, "shared rate limiter connected");
                        slot.store(Some(Arc::new(manager)));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(redis = %shown, error = %e, "shared rate limiter: cannot reach Redis yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Self { settings, connection, script: redis::Script::new(GCRA), connector }
    }

    /// Whether Redis has been reached (the connection manager reconnects by itself after that).
    pub fn connected(&self) -> bool {
        self.connection.load().is_some()
    }

    /// The settings this limiter was started with.
    pub fn settings(&self) -> &SharedSettings {
        &self.settings
    }

    /// Tests and charges `cells` together in Redis.
    pub async fn admit(&self, cells: &[Cell<'_>]) -> Verdict {
        let Some(manager) = self.connection.load_full() else {
            return Verdict::Unavailable;
        };
        let mut manager = (*manager).clone();
        let mut invocation = self.script.prepare_invoke();
        for cell in cells {
            let shadow = if cell.shadow { "1" } else { "0" };
            invocation.key(cell.key).arg(cell.interval_us).arg(cell.tolerance_us).arg(cell.cost.max(1)).arg(shadow);
        }
        let call = invocation.invoke_async::<Vec<u64>>(&mut manager);
        let cell =
            |i: u64, wait_us: u64| (usize::try_from(i.saturating_sub(1)).unwrap_or(0), Duration::from_micros(wait_us));
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok(reply)) => match reply.as_slice() {
                [0, _, i, wait_us] => Verdict::Admitted { shadowed: Some(cell(*i, *wait_us)) },
                [0, ..] => Verdict::Admitted { shadowed: None },
                [i, wait_us, ..] => {
                    let (index, wait) = cell(*i, *wait_us);
                    Verdict::Refused { index, wait }
                }
                _ => Verdict::Unavailable,
            },
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared rate limiter: Redis error");
                Verdict::Unavailable
            }
            Err(_) => Verdict::Unavailable,
        }
    }
}

async fn connect(url: &SecretString, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url.expose_secret())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout.max(Duration::from_millis(500)))
        .set_response_timeout(timeout)
        .set_number_of_retries(2)
        .set_max_delay(1000);
    ConnectionManager::new_with_config(client, config).await
}
