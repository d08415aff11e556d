//! What a GitLab webhook delivery is: its kind (from `X-Gitlab-Event` and the
//! body's `object_kind`, which must agree) and its delivery key (the
//! `Idempotency-Key` header, which GitLab 17.4+ keeps across retries of one
//! event, else `X-Gitlab-Event-UUID`).

use axum::http::HeaderMap;

/// A delivery that cannot be accepted, with the reason given to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The body is not a JSON object.
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    /// No `X-Gitlab-Event` header.
    #[error("the X-Gitlab-Event header is missing")]
    NoEventHeader,
    /// An `X-Gitlab-Event` this dispatcher does not know.
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    /// The body's `object_kind` is missing or says another kind than the header.
    #[error("object_kind {found:?} does not match X-Gitlab-Event {header:?} (expected {expected:?})")]
    KindMismatch {
        /// The header.
        header: String,
        /// The object_kind that header implies.
        expected: String,
        /// The body's object_kind.
        found: String,
    },
    /// A header that decides how the delivery is read was sent more than once.
    #[error("the {0} header was sent more than once")]
    Repeated(&'static str),
    /// Neither `Idempotency-Key` nor `X-Gitlab-Event-UUID`.
    #[error("no delivery key: send Idempotency-Key or X-Gitlab-Event-UUID")]
    NoDeliveryKey,
}

/// A delivery ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The key that makes redeliveries of one event the same delivery.
    pub key: String,
    /// The event kind, as `object_kind` names it (`push`, `merge_request`, …).
    pub kind: String,
    /// The `X-Gitlab-Event` header as sent.
    pub header: String,
    /// The body.
    pub payload: serde_json::Value,
}

/// `X-Gitlab-Event` values and the `object_kind` each carries.
const KINDS: &[(&str, &str)] = &[
    ("Push Hook", "push"),
    ("Tag Push Hook", "tag_push"),
    ("Issue Hook", "issue"),
    ("Confidential Issue Hook", "issue"),
    ("Note Hook", "note"),
    ("Confidential Note Hook", "note"),
    ("Merge Request Hook", "merge_request"),
    ("Wiki Page Hook", "wiki_page"),
    ("Pipeline Hook", "pipeline"),
    ("Job Hook", "build"),
    ("Deployment Hook", "deployment"),
    ("Feature Flag Hook", "feature_flag"),
    ("Release Hook", "release"),
    ("Emoji Hook", "emoji"),
    ("Resource Access Token Hook", "access_token"),
    ("Member Hook", "member"),
    ("Subgroup Hook", "subgroup"),
    ("Project Hook", "project"),
];

impl Delivery {
    /// Reads a delivery from its headers and body.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, EventError> {
        let header = single(headers, "x-gitlab-event", "X-Gitlab-Event")?
            .ok_or(EventError::NoEventHeader)?
            .to_string();
        let expected = KINDS
            .iter()
            .find(|(h, _)| *h == header)
            .map(|(_, k)| k.to_string())
            .ok_or_else(|| EventError::UnknownKind(header.clone()))?;
        let payload: serde_json::Value = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
        let found = payload
            .get("object_kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        if found != expected {
            return Err(EventError::KindMismatch {
                header,
                expected,
                found,
            });
        }
        let idempotency_key = single(headers, "idempotency-key", "Idempotency-Key")?;
        let event_uuid = single(headers, "x-gitlab-event-uuid", "X-Gitlab-Event-UUID")?;
        let key = idempotency_key
            .or(event_uuid)
            .ok_or(EventError::NoDeliveryKey)?
            .to_string();
        Ok(Delivery {
            key,
            kind: expected,
            header,
            payload,
        })
    }
}

/// The one non-empty value of header `name`, if any; an error when it is repeated.
fn single<'h>(headers: &'h HeaderMap, name: &str, shown: &'static str) -> Result<Option<&'h str>, EventError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(EventError::Repeated(shown));
    }
    Ok(first
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const PUSH: &[u8] = br#"{"object_kind":"push","ref":"refs/heads/main"}"#;

    #[test]
    fn the_idempotency_key_wins_over_the_event_uuid() {
        let d = Delivery::parse(
            &headers(&[
                ("x-gitlab-event", "Push Hook"),
                ("idempotency-key", "k1"),
                ("x-gitlab-event-uuid", "u1"),
            ]),
            PUSH,
        )
        .unwrap();
        assert_eq!((d.key.as_str(), d.kind.as_str()), ("k1", "push"));
        let d = Delivery::parse(
            &headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "u1")]),
            PUSH,
        )
        .unwrap();
        assert_eq!(d.key, "u1");
    }

    #[test]
    fn bad_deliveries_say_why() {
        let h = headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "u")]);
        assert!(matches!(Delivery::parse(&h, b"{nope"), Err(EventError::Json(_))));
        assert_eq!(
            Delivery::parse(&headers(&[("x-gitlab-event-uuid", "u")]), PUSH),
            Err(EventError::NoEventHeader)
        );
        assert_eq!(
            Delivery::parse(
                &headers(&[("x-gitlab-event", "Coffee Hook"), ("x-gitlab-event-uuid", "u")]),
                PUSH
            ),
            Err(EventError::UnknownKind("Coffee Hook".into()))
        );
        assert!(matches!(
            Delivery::parse(
                &headers(&[("x-gitlab-event", "Issue Hook"), ("x-gitlab-event-uuid", "u")]),
                PUSH
            ),
            Err(EventError::KindMismatch { .. })
        ));
        assert_eq!(
            Delivery::parse(&headers(&[("x-gitlab-event", "Push Hook")]), PUSH),
            Err(EventError::NoDeliveryKey)
        );
        let mut twice = headers(&[("x-gitlab-event", "Push Hook"), ("idempotency-key", "a")]);
        twice.append("idempotency-key", "b".parse().unwrap());
        assert_eq!(
            Delivery::parse(&twice, PUSH),
            Err(EventError::Repeated("Idempotency-Key"))
        );
    }
}
