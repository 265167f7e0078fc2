//! The settings a test stack gives its services, in-process or as processes.

use crate::api::ADMIN;
use crate::prefix::{RedisPrefix, REDIS_URL};
use crate::vhost::{Vhost, AMQP_BASE};

/// `HERALD_*` settings as name and value pairs, the form every service reads them in.
pub type Settings = Vec<(String, String)>;

/// A fresh vhost and Redis prefix, and settings for a test stack in them: the test admin
/// token, plain HTTP and loopback receivers allowed, configuration seen within 100 ms; then
/// `defaults` (the kind of stack's own), then `extra` (the test's) over those.
pub fn isolated(
    defaults: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> (Vhost, RedisPrefix, Settings) {
    let vhost = Vhost::new();
    let prefix = crate::random_name();
    let amqp_url = vhost.amqp_url(AMQP_BASE);
    let mut settings = Settings::new();
    for (k, v) in [
        ("HERALD_AMQP_URL", amqp_url.as_str()),
        ("HERALD_REDIS_PREFIX", &prefix),
        ("HERALD_ADMIN_TOKEN", ADMIN),
        ("HERALD_ALLOW_HTTP", "true"),
        ("HERALD_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("HERALD_CONFIG_REFRESH", "100ms"),
    ]
    .iter()
    .chain(defaults)
    .chain(extra)
    {
        set(&mut settings, k, v);
    }
    let redis = RedisPrefix {
        url: get(&settings, "HERALD_REDIS_URL")
            .unwrap_or(REDIS_URL)
            .into(),
        prefix,
    };
    (vhost, redis, settings)
}

/// Sets `name` to `value`, replacing any earlier value.
pub fn set(settings: &mut Settings, name: &str, value: &str) {
    settings.retain(|(k, _)| k != name);
    settings.push((name.to_string(), value.to_string()));
}

/// The value of `name`, if set.
pub fn get<'a>(settings: &'a Settings, name: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
