//! Tokens, as `--auth-token` chooses them: etcd's simple tokens (random,
//! known to every member because the Authenticate entry carries them,
//! expiring after `--auth-token-ttl` of disuse on each member's own clock)
//! or JWTs (signed by the member that answers Authenticate, verified by
//! any member holding the public key).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// etcd's default lifetime of a JWT.
const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);
/// Random letters before the `.` of a simple token, as etcd makes them.
const SIMPLE_TOKEN_LETTERS: usize = 16;
/// Past this many live simple tokens, expired ones are swept on insert.
const SWEEP_AT: usize = 4096;

/// How tokens are made, from `--auth-token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Simple,
    Jwt {
        public_key: std::path::PathBuf,
        private_key: Option<std::path::PathBuf>,
        sign_method: String,
        ttl: Duration,
    },
}

impl TokenKind {
    /// Parses `--auth-token`: `simple`, or
    /// `jwt,pub-key=PATH[,priv-key=PATH],sign-method=ALG[,ttl=DURATION]`.
    pub fn parse(text: &str) -> std::result::Result<TokenKind, String> {
        let mut parts = text.split(',');
        match parts.next() {
            Some("simple") => Ok(TokenKind::Simple),
            Some("jwt") => {
                let (mut public_key, mut private_key, mut sign_method, mut ttl) = (None, None, None, DEFAULT_JWT_TTL);
                for part in parts {
                    let (k, v) = part.split_once('=').ok_or_else(|| format!("invalid jwt option {part:?}"))?;
                    match k {
                        "pub-key" => public_key = Some(v.into()),
                        "priv-key" => private_key = Some(v.into()),
                        "sign-method" => sign_method = Some(v.to_string()),
                        "ttl" => ttl = crate::config::parse_go_duration(v)?,
                        _ => return Err(format!("unknown jwt option {k:?}")),
                    }
                }
                let sign_method = sign_method.ok_or("jwt: sign-method is required")?;
                algorithm(&sign_method)?;
                Ok(TokenKind::Jwt {
                    public_key: public_key.ok_or("jwt: pub-key is required")?,
                    private_key,
                    sign_method,
                    ttl,
                })
            }
            _ => Err(format!("invalid auth token type {text:?} (want simple or jwt,...)")),
        }
    }
}

fn algorithm(name: &str) -> std::result::Result<Algorithm, String> {
    Ok(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        // ES512 is etcd's too; the jsonwebtoken crate has no P-521.
        other => return Err(format!("jwt: unsupported sign-method {other:?}")),
    })
}

/// The claims etcd's JWTs carry.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

struct Jwt {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    ttl: Duration,
}

impl Jwt {
    fn load(public_key: &std::path::Path, private_key: Option<&std::path::Path>, sign_method: &str, ttl: Duration) -> anyhow::Result<Jwt> {
        let algorithm = algorithm(sign_method).map_err(anyhow::Error::msg)?;
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()));
        let is_ec = matches!(algorithm, Algorithm::ES256 | Algorithm::ES384);
        let public = read(public_key)?;
        let decoding = if is_ec {
            DecodingKey::from_ec_pem(&public)?
        } else {
            DecodingKey::from_rsa_pem(&public)?
        };
        let encoding = match private_key {
            None => None,
            Some(p) => {
                let private = read(p)?;
                Some(if is_ec {
                    EncodingKey::from_ec_pem(&private)?
                } else {
                    EncodingKey::from_rsa_pem(&private)?
                })
            }
        };
        Ok(Jwt {
            algorithm,
            decoding,
            encoding,
            ttl,
        })
    }
}

/// A simple token's owner and when it lapses on this member.
struct Session {
    user: String,
    expires: Instant,
}

/// This member's token provider.
pub struct Tokens {
    ttl: Duration,
    jwt: Option<Jwt>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user: String,
    /// The auth revision a JWT was issued at; `None` for simple tokens,
    /// which are checked at the current revision.
    pub revision: Option<u64>,
}

impl Tokens {
    /// `simple_ttl` is `--auth-token-ttl`; JWTs have their own.
    pub fn new(kind: &TokenKind, simple_ttl: Duration) -> anyhow::Result<Tokens> {
        let jwt = match kind {
            TokenKind::Simple => None,
            TokenKind::Jwt {
                public_key,
                private_key,
                sign_method,
                ttl,
            } => Some(Jwt::load(public_key, private_key.as_deref(), sign_method, *ttl)?),
        };
        Ok(Tokens {
            ttl: simple_ttl,
            jwt,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// A fresh simple token for the proposer to put in the Authenticate
    /// entry (empty under JWT, where the token is made after apply).
    pub fn new_simple_token(&self, suffix: u64) -> String {
        if self.jwt.is_some() {
            return String::new();
        }
        let mut rng = rand::rng();
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let letters: String = (0..SIMPLE_TOKEN_LETTERS)
            .map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]))
            .collect();
        format!("{letters}.{suffix}")
    }

    /// The token handed to `user` after apply accepted its Authenticate.
    pub fn issue(&self, user: &str, revision: u64, simple_token: &str) -> Result<String> {
        let Some(jwt) = &self.jwt else {
            return Ok(simple_token.to_string());
        };
        let encoding = jwt
            .encoding
            .as_ref()
            .ok_or_else(|| Error::AuthInternal("jwt: no private key to sign tokens with (verify-only)".into()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: now + jwt.ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(jwt.algorithm), &claims, encoding).map_err(|e| Error::AuthInternal(format!("jwt: {e}")))
    }

    /// Who `token` names, refreshing a simple token's lifetime as etcd
    /// does on each use.
    pub fn owner(&self, token: &str) -> Result<TokenOwner> {
        if let Some(jwt) = &self.jwt {
            let mut validation = Validation::new(jwt.algorithm);
            validation.leeway = 0;
            validation.set_required_spec_claims(&["exp"]);
            let data = jsonwebtoken::decode::<Claims>(token, &jwt.decoding, &validation).map_err(|_| Error::InvalidAuthToken)?;
            return Ok(TokenOwner {
                user: data.claims.username,
                revision: Some(data.claims.revision),
            });
        }
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        match sessions.get_mut(token) {
            Some(s) if s.expires > now => {
                s.expires = now + self.ttl;
                Ok(TokenOwner {
                    user: s.user.clone(),
                    revision: None,
                })
            }
            Some(_) => {
                sessions.remove(token);
                Err(Error::InvalidAuthToken)
            }
            None => Err(Error::InvalidAuthToken),
        }
    }

    /// Makes a simple token valid on this member, as its Authenticate entry
    /// is applied.
    pub fn register(&self, token: String, user: String) {
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        if sessions.len() >= SWEEP_AT {
            sessions.retain(|_, s| s.expires > now);
        }
        sessions.insert(
            token,
            Session {
                user,
                expires: now + self.ttl,
            },
        );
    }

    pub fn invalidate_user(&self, user: &str) {
        self.sessions.lock().retain(|_, s| s.user != user);
    }

    pub fn clear(&self) {
        self.sessions.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_token_flag() {
        assert_eq!(TokenKind::parse("simple"), Ok(TokenKind::Simple));
        let jwt = TokenKind::parse("jwt,pub-key=/k.pub,priv-key=/k,sign-method=RS256,ttl=10m").expect("jwt");
        assert_eq!(
            jwt,
            TokenKind::Jwt {
                public_key: "/k.pub".into(),
                private_key: Some("/k".into()),
                sign_method: "RS256".into(),
                ttl: Duration::from_secs(600),
            }
        );
        let verify_only = TokenKind::parse("jwt,pub-key=/k.pub,sign-method=ES256").expect("verify-only");
        assert!(matches!(verify_only, TokenKind::Jwt { private_key: None, ttl, .. } if ttl == DEFAULT_JWT_TTL));
        for bad in [
            "",
            "jwt",
            "jwt,pub-key=/k",
            "jwt,sign-method=RS256",
            "jwt,pub-key=/k,sign-method=HS256",
            "opaque",
            "jwt,x=1",
        ] {
            assert!(TokenKind::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn simple_tokens_are_known_once_registered_and_until_revoked() {
        let tokens = Tokens::new(&TokenKind::Simple, Duration::from_secs(300)).expect("tokens");
        let a = tokens.new_simple_token(7);
        let b = tokens.new_simple_token(8);
        assert_ne!(a, b);
        assert!(a.ends_with(".7"), "{a}");
        assert!(matches!(tokens.owner(&a), Err(Error::InvalidAuthToken)));
        tokens.register(a.clone(), "alice".into());
        tokens.register(b.clone(), "bob".into());
        assert_eq!(tokens.owner(&a).ok().map(|o| o.user), Some("alice".into()));
        assert_eq!(tokens.issue("alice", 3, &a).ok(), Some(a.clone()));
        tokens.invalidate_user("alice");
        assert!(tokens.owner(&a).is_err());
        assert_eq!(tokens.owner(&b).ok().map(|o| o.user), Some("bob".into()));
        tokens.clear();
        assert!(tokens.owner(&b).is_err());
    }

    #[test]
    fn an_expired_simple_token_is_refused() {
        let tokens = Tokens::new(&TokenKind::Simple, Duration::ZERO).expect("tokens");
        let t = tokens.new_simple_token(1);
        tokens.register(t.clone(), "alice".into());
        assert!(matches!(tokens.owner(&t), Err(Error::InvalidAuthToken)));
    }
}
