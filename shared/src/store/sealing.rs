//! Secrets at rest: a connection's signing secrets, credentials (an OAuth2 client secret,
//! a client certificate's private key) and sensitive headers are
//! sealed when it is written and opened when it is read (see [`crate::secrets`]), and stored
//! connections are re-sealed after the key changes.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{parse, to_json, Store, StoreError};
use crate::model::connection::{is_sensitive_header, Auth};
use crate::model::Connection;

impl Store {
    /// A connection as stored: its signing secrets and credentials sealed, the connection id
    /// as their context.
    pub(super) fn seal_connection(&self, c: &Connection) -> String {
        let keys = self.secrets();
        let mut sealed = c.clone();
        sealed.secret = keys.seal(&c.secret, &c.id);
        for p in &mut sealed.previous_secrets {
            p.secret = keys.seal(&p.secret, &c.id);
        }
        match &mut sealed.auth {
            Some(Auth::Bearer { token }) => *token = keys.seal(token, &c.id),
            Some(Auth::Basic { password, .. }) => *password = keys.seal(password, &c.id),
            Some(Auth::OAuth2ClientCredentials(o)) => {
                o.client_secret = keys.seal(&o.client_secret, &c.id);
            }
            None => {}
        }
        if let Some(tls) = &mut sealed.tls {
            tls.client_key_pem = keys.seal(&tls.client_key_pem, &c.id);
        }
        for (name, value) in &mut sealed.headers {
            if is_sensitive_header(name) {
                *value = keys.seal(value, &c.id);
            }
        }
        to_json(&sealed)
    }

    /// A stored connection with its secrets opened.
    pub(super) fn open_connection(&self, key: &str, json: &str) -> Result<Connection, StoreError> {
        let mut c: Connection = parse(key, json)?;
        let keys = self.secrets();
        let open = |v: &mut String, id: &str| {
            *v = keys.open(v, id).map_err(|source| StoreError::Secret {
                key: key.to_string(),
                source,
            })?;
            Ok::<_, StoreError>(())
        };
        let id = c.id.clone();
        open(&mut c.secret, &id)?;
        for p in &mut c.previous_secrets {
            open(&mut p.secret, &id)?;
        }
        match &mut c.auth {
            Some(Auth::Bearer { token }) => open(token, &id)?,
            Some(Auth::Basic { password, .. }) => open(password, &id)?,
            Some(Auth::OAuth2ClientCredentials(o)) => open(&mut o.client_secret, &id)?,
            None => {}
        }
        if let Some(tls) = &mut c.tls {
            open(&mut tls.client_key_pem, &id)?;
        }
        for (name, value) in &mut c.headers {
            if is_sensitive_header(name) {
                open(value, &id)?;
            }
        }
        Ok(c)
    }

    /// Re-seals, with the current key, every stored connection whose secrets are plaintext or
    /// sealed with an old key (after `HERALD_SECRETS_KEY` changed). A connection changed
    /// meanwhile is left to its writer, which sealed it with the current key anyway. Returns how
    /// many were re-sealed.
    pub async fn reseal_connections(&self) -> Result<usize, StoreError> {
        const SWAP: &str = r"
            if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
                redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
                return 1
            end
            return 0";
        let swap = redis::Script::new(SWAP);
        let mut conn = self.conn();
        let workspaces: Vec<String> = conn.zrange(self.key("workspaces"), 0, -1).await?;
        let mut resealed = 0;
        for ws in workspaces {
            let key = self.ws_key(&ws, "conns");
            let all: HashMap<String, String> = conn.hgetall(&key).await?;
            for (id, stored) in all {
                let raw: Connection = parse(&key, &stored)?;
                let keys = self.secrets();
                let mut fields = vec![raw.secret.as_str()];
                fields.extend(raw.previous_secrets.iter().map(|p| p.secret.as_str()));
                match &raw.auth {
                    Some(Auth::Bearer { token }) => fields.push(token),
                    Some(Auth::Basic { password, .. }) => fields.push(password),
                    Some(Auth::OAuth2ClientCredentials(o)) => fields.push(&o.client_secret),
                    None => {}
                }
                fields.extend(raw.tls.iter().map(|t| t.client_key_pem.as_str()));
                fields.extend(
                    raw.headers
                        .iter()
                        .filter(|(n, _)| is_sensitive_header(n))
                        .map(|(_, v)| v.as_str()),
                );
                if fields.iter().all(|f| keys.is_current(f)) {
                    continue;
                }
                let opened = self.open_connection(&key, &stored)?;
                let done: i64 = swap
                    .key(&key)
                    .arg(&id)
                    .arg(&stored)
                    .arg(self.seal_connection(&opened))
                    .invoke_async(&mut conn)
                    .await?;
                resealed += done as usize;
            }
        }
        Ok(resealed)
    }
}
