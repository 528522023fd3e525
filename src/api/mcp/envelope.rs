//! Reading a JSON-RPC message in one pass over its body: the members the endpoint reads are kept
//! raw (borrowed from the body) or read into small values as they pass; what a request carries for
//! others (its client's information and capabilities, a tool's arguments until the tool is known)
//! is skimmed, never built into a tree of values. `params._meta` is read on the way through.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// `params._meta`'s member holding the protocol version (2026-07-28).
pub const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
/// `params._meta`'s member holding the client's capabilities (2026-07-28).
pub const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";

/// A JSON-RPC message's members. A member present is `Some`, `null` included.
#[derive(Deserialize)]
pub struct Message<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_params")]
    pub params: Option<Params<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub error: Option<&'a RawValue>,
}

/// Why a body is not a message: a JSON-RPC parse error (not JSON), or an invalid request.
pub enum NotAMessage {
    Json(String),
    Invalid(&'static str),
}

impl<'a> Message<'a> {
    /// The message in `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, NotAMessage> {
        let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if object && let Ok(message) = serde_json::from_slice(bytes) {
            return Ok(message);
        }
        // Not an object, not JSON, or an object with a member twice: told apart the slow way.
        Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
            Err(e) => NotAMessage::Json(format!("the body is not JSON: {e}")),
            Ok(_) if object => {
                NotAMessage::Invalid("a member of the message appears more than once")
            }
            Ok(_) => NotAMessage::Invalid(
                "the body must be one JSON-RPC request or notification object (batches are not \
                 taken)",
            ),
        })
    }
}

/// A member kept raw, `null` included (an `Option` alone would read `null` as absent).
fn present<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue as Deserialize<'de>>::deserialize(d).map(Some)
}

/// `params` when present, `null` included (which is no object).
fn present_params<'de: 'a, 'a, D: de::Deserializer<'de>>(
    d: D,
) -> Result<Option<Params<'a>>, D::Error> {
    Params::deserialize(d).map(Some)
}

/// A raw member's text, when it is a JSON string.
pub fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    if !json.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(json) {
        Ok(borrowed) => Some(Cow::Borrowed(borrowed)),
        // Escapes: decoded into a string of its own.
        Err(_) => serde_json::from_str::<String>(json).ok().map(Cow::Owned),
    }
}

/// A JSON-RPC id's type (and a progress token's): a string or an integer.
pub fn is_id(value: &Value) -> bool {
    value.is_string() || value.is_i64() || value.is_u64()
}

/// `params`: the members of an object that any method reads, or another JSON value.
pub enum Params<'a> {
    Object(Members<'a>),
    /// Not an object (which JSON-RPC's params must be).
    NotObject,
}

/// The members of `params` read here; each present one is `Some` (`null` included).
#[derive(Default)]
pub struct Members<'a> {
    /// `_meta`, when it is an object.
    pub meta: Option<Meta>,
    /// A tool call's tool.
    pub name: Option<&'a RawValue>,
    /// A tool call's arguments, read once the tool is known.
    pub arguments: Option<&'a RawValue>,
    /// A resource read's resource.
    pub uri: Option<&'a RawValue>,
    /// The version an `initialize` asks for.
    pub protocol_version: Option<&'a RawValue>,
    /// A resource list's page.
    pub cursor: Option<&'a RawValue>,
}

/// The members of `params._meta` that matter here.
#[derive(Default)]
pub struct Meta {
    /// The protocol version, as sent (of any type).
    pub version: Option<Value>,
    /// Whether the client's capabilities are there.
    pub capabilities: bool,
    /// `progressToken`, when a string or an integer.
    pub progress_token: Option<Value>,
}

/// The names of `params`'s members.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Member {
    #[serde(rename = "_meta")]
    Meta,
    Name,
    Arguments,
    Uri,
    ProtocolVersion,
    Cursor,
    #[serde(other)]
    Other,
}

/// The names of `_meta`'s members.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum MetaMember {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    Version,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities")]
    Capabilities,
    #[serde(rename = "progressToken")]
    ProgressToken,
    #[serde(other)]
    Other,
}

/// Visits a value that matters only when it is an object: any other is `Default::default()`,
/// its contents skipped.
trait ObjectOnly<'de>: Sized + Default {
    fn object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

macro_rules! other_types {
    ($($visit:ident: $t:ty),*) => {
        $(fn $visit<E: de::Error>(self, _: $t) -> Result<T, E> {
            Ok(T::default())
        })*
    };
}

impl<'de, T: ObjectOnly<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::object(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    other_types!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64,
        visit_str: &str);
}

/// `params` as read: `Object` only for an object.
#[derive(Default)]
struct ParamsField<'a>(Option<Members<'a>>);

impl<'de: 'a, 'a> ObjectOnly<'de> for ParamsField<'a> {
    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut members = Members::default();
        while let Some(key) = map.next_key::<Member>()? {
            match key {
                Member::Meta => members.meta = map.next_value::<MetaField>()?.0,
                Member::Name => members.name = Some(map.next_value()?),
                Member::Arguments => members.arguments = Some(map.next_value()?),
                Member::Uri => members.uri = Some(map.next_value()?),
                Member::ProtocolVersion => members.protocol_version = Some(map.next_value()?),
                Member::Cursor => members.cursor = Some(map.next_value()?),
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ParamsField(Some(members)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let field =
            d.deserialize_any(ObjectVisitor::<ParamsField<'a>>(std::marker::PhantomData))?;
        Ok(match field.0 {
            Some(members) => Params::Object(members),
            None => Params::NotObject,
        })
    }
}

/// `_meta` as read: `Some` only for an object.
#[derive(Default)]
struct MetaField(Option<Meta>);

impl<'de> ObjectOnly<'de> for MetaField {
    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut meta = Meta::default();
        while let Some(key) = map.next_key::<MetaMember>()? {
            match key {
                MetaMember::Version => meta.version = Some(map.next_value()?),
                MetaMember::Capabilities => {
                    map.next_value::<IgnoredAny>()?;
                    meta.capabilities = true;
                }
                MetaMember::ProgressToken => {
                    let token: Value = map.next_value()?;
                    meta.progress_token = is_id(&token).then_some(token);
                }
                MetaMember::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(MetaField(Some(meta)))
    }
}

impl<'de> Deserialize<'de> for MetaField {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor::<MetaField>(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn members(params: &str) -> Members<'_> {
        let message = Message::parse(params.as_bytes()).ok().expect("a message");
        match message.params {
            Some(Params::Object(members)) => members,
            _ => panic!("params were not read as an object"),
        }
    }

    #[test]
    fn params_are_read_in_one_pass_whatever_they_carry() {
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "_meta": {PROTOCOL_VERSION_KEY: "2026-07-28", CLIENT_CAPABILITIES_KEY: {"x": [1, {}]},
                "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"},
                "progressToken": "p-1"},
            "name": "get_artifact", "arguments": {"artifact_id": "a", "deep": [[[]]]},
            "extra": [1, 2, {"k": null}]}})
        .to_string();
        let m = members(&body);
        let meta = m.meta.expect("an object's _meta");
        assert_eq!(meta.version, Some(json!("2026-07-28")));
        assert!(meta.capabilities);
        assert_eq!(meta.progress_token, Some(json!("p-1")));
        assert_eq!(text(m.name.unwrap()).as_deref(), Some("get_artifact"));
        assert_eq!(
            serde_json::from_str::<Value>(m.arguments.unwrap().get()).unwrap(),
            json!({"artifact_id": "a", "deep": [[[]]]})
        );
        assert!(m.uri.is_none() && m.cursor.is_none() && m.protocol_version.is_none());
    }

    #[test]
    fn members_of_other_types_are_told_apart_from_absent_ones() {
        // A `_meta` that is not an object is as good as none; a null version is present.
        for meta in ["null", "[1, [2]]", "\"x\"", "7", "true"] {
            let body = format!(r#"{{"id":1,"params":{{"_meta":{meta},"name":1}}}}"#);
            let m = members(&body);
            assert!(m.meta.is_none(), "{meta}");
            assert!(text(m.name.unwrap()).is_none(), "a number is not a name");
        }
        let m = members(
            r#"{"params":{"_meta":{"io.modelcontextprotocol/protocolVersion":null,"progressToken":1.5}}}"#,
        );
        let meta = m.meta.unwrap();
        assert_eq!(meta.version, Some(Value::Null));
        assert!(!meta.capabilities);
        assert_eq!(meta.progress_token, None, "a fraction is no token");
        // Escaped member names and values are read as their text.
        let m = members(r#"{"params":{"n\u0061me":"cl\u0061im_task"}}"#);
        assert_eq!(text(m.name.unwrap()).as_deref(), Some("claim_task"));
        for params in ["null", "[1]", "\"s\"", "false", "0"] {
            let body = format!(r#"{{"id":1,"params":{params}}}"#);
            let message = Message::parse(body.as_bytes()).ok().unwrap();
            assert!(
                matches!(message.params, Some(Params::NotObject)),
                "{params}"
            );
        }
        let message = Message::parse(br#"{"id":null}"#).ok().unwrap();
        assert_eq!(message.id.map(RawValue::get), Some("null"));
        assert!(message.params.is_none() && message.method.is_none());
    }

    #[test]
    fn a_body_that_is_no_message_says_why() {
        let why = |body: &[u8]| match Message::parse(body) {
            Ok(_) => "message".to_owned(),
            Err(NotAMessage::Json(e)) => format!("json: {e}"),
            Err(NotAMessage::Invalid(e)) => format!("invalid: {e}"),
        };
        assert!(why(b"{\"id\":").starts_with("json: the body is not JSON"));
        assert!(why(b"[{\"id\":1}]").starts_with("invalid: the body must be one"));
        assert!(why(b"\"id\"").starts_with("invalid: the body must be one"));
        assert!(why(br#"{"id":1,"id":2}"#).starts_with("invalid: a member"));
        assert!(why(b"\xff").starts_with("json:"));
        assert_eq!(why(b" {\"method\":\"ping\"} "), "message");
    }
}
