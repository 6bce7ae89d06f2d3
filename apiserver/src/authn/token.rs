//! Bearer tokens, for callers that reach us without the front proxy (in-cluster
//! clients of the Service, kubelet-style probes with a token). kube-apiserver
//! judges each token with a TokenReview; the answer, yes or no, is kept briefly
//! under the token's SHA-256, never the token itself. Tokens are never logged.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};

use super::UserInfo;
use super::cache::TtlCache;
use crate::status::ApiError;

/// How long a TokenReview answer is reused (kube-apiserver's delegating
/// authenticator uses 10 s as well).
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// At most this many tokens are remembered.
pub const TOKEN_CACHE_CAPACITY: usize = 4096;

type TokenDigest = [u8; 32];

/// Authenticates bearer tokens by TokenReview.
pub struct TokenAuthenticator {
    client: Client,
    /// `None`: kube-apiserver said the token is not valid.
    cache: TtlCache<TokenDigest, Option<UserInfo>>,
}

impl TokenAuthenticator {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            cache: TtlCache::new(ttl, TOKEN_CACHE_CAPACITY),
        }
    }

    /// The user of the request's `Authorization: Bearer` token; 401 without
    /// one, for a token kube-apiserver rejects, or when it cannot be asked.
    pub async fn authenticate_bearer(&self, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        match bearer_token(headers) {
            Some(token) => self.authenticate(token).await,
            None => Err(ApiError::unauthorized()),
        }
    }

    /// The user a token stands for (see [`authenticate_bearer`](Self::authenticate_bearer)).
    pub async fn authenticate(&self, token: &str) -> Result<UserInfo, ApiError> {
        let key = digest(token);
        let user = match self.cache.get(&key, Instant::now()) {
            Some(user) => user,
            None => {
                let user = self.review(token).await?;
                self.cache.insert(key, user.clone(), Instant::now());
                user
            }
        };
        user.ok_or_else(ApiError::unauthorized)
    }

    /// `Ok(None)`: the token is not valid; `Err`: nobody could tell (not cached).
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, ApiError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                // The error is about the call; it never holds the token.
                tracing::warn!(%error, "TokenReview failed: refusing the bearer token");
                ApiError::unauthorized()
            })?;
        Ok(user_of(reviewed.status.unwrap_or_default()))
    }
}

/// The user a TokenReview status vouches for, if any.
fn user_of(status: TokenReviewStatus) -> Option<UserInfo> {
    if status.authenticated != Some(true) {
        if let Some(error) = status.error.filter(|e| !e.is_empty()) {
            tracing::debug!(%error, "bearer token not authenticated");
        }
        return None;
    }
    let user = status.user?;
    let name = user.username.filter(|n| !n.is_empty())?;
    Some(UserInfo {
        name,
        uid: user.uid.filter(|u| !u.is_empty()),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    })
}

/// The token of an `Authorization: Bearer <token>` header, read the way
/// kube-apiserver does (scheme case-insensitive, text after the token ignored).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(token: &str) -> TokenDigest {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderValue, StatusCode};
    use k8s_openapi::api::authentication::v1 as authn;

    use super::*;
    use crate::authn::fake_apiserver;

    fn headers(value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(AUTHORIZATION, HeaderValue::from_static(value));
        map
    }

    #[test]
    fn reads_bearer_tokens_like_kube_apiserver() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("BEARER abc trailing")), Some("abc"));
        for refused in ["Bearer", "Bearer ", "Basic abc", "abc", ""] {
            assert_eq!(bearer_token(&headers(refused)), None, "{refused:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cache_key_is_a_digest_not_the_token() {
        let key = digest("secret-token");
        assert_ne!(&key[..], b"secret-token".as_slice());
        assert_eq!(key, digest("secret-token"));
        assert_ne!(key, digest("secret-tokeN"));
    }

    #[test]
    fn only_an_authenticated_named_user_counts() {
        let user = authn::UserInfo {
            username: Some("system:serviceaccount:a:b".into()),
            uid: Some("u-1".into()),
            groups: Some(vec!["system:serviceaccounts".into()]),
            extra: Some(BTreeMap::from([("k".into(), vec!["v".into()])])),
        };
        let yes = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(user.clone()),
            ..TokenReviewStatus::default()
        };
        let got = user_of(yes.clone()).unwrap();
        assert_eq!(got.name, "system:serviceaccount:a:b");
        assert_eq!(got.uid.as_deref(), Some("u-1"));
        assert_eq!(got.groups, ["system:serviceaccounts"]);
        assert_eq!(got.extra["k"], ["v"]);

        let refused = [
            TokenReviewStatus::default(),
            TokenReviewStatus {
                authenticated: Some(false),
                ..yes.clone()
            },
            TokenReviewStatus {
                user: None,
                ..yes.clone()
            },
            TokenReviewStatus {
                user: Some(authn::UserInfo {
                    username: Some(String::new()),
                    ..user
                }),
                ..yes
            },
        ];
        for status in refused {
            assert_eq!(user_of(status.clone()), None, "{status:?}");
        }
    }

    #[tokio::test]
    async fn answers_are_cached_and_failures_are_401() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let client = fake_apiserver(move |path, body| {
            counted.fetch_add(1, Ordering::SeqCst);
            assert_eq!(path, "/apis/authentication.k8s.io/v1/tokenreviews");
            let token = body["spec"]["token"].as_str().unwrap().to_owned();
            match token.as_str() {
                "good" => Ok(serde_json::json!({"status": {
                    "authenticated": true,
                    "user": {"username": "bob", "groups": ["g"]},
                }})),
                "bad" => {
                    Ok(serde_json::json!({"status": {"authenticated": false, "error": "nope"}}))
                }
                _ => Err(StatusCode::SERVICE_UNAVAILABLE),
            }
        });
        let tokens = TokenAuthenticator::new(client, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(tokens.authenticate("good").await.unwrap().name, "bob");
            assert_eq!(
                tokens.authenticate("bad").await.unwrap_err(),
                ApiError::unauthorized()
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one review per token");
        for _ in 0..2 {
            assert_eq!(
                tokens.authenticate("unknown").await.unwrap_err(),
                ApiError::unauthorized()
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4, "failures are not cached");
        assert_eq!(
            tokens
                .authenticate_bearer(&headers("Bearer good"))
                .await
                .unwrap()
                .name,
            "bob"
        );
        assert_eq!(
            tokens.authenticate_bearer(&HeaderMap::new()).await,
            Err(ApiError::unauthorized())
        );
    }
}
