//! Settings that are lists: a list in the file, or one comma-separated string as in a variable.
//! A leaf module: the config and the webhook entries it holds both deserialize with it.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrText {
    List(Vec<String>),
    Text(String),
}

impl ListOrText {
    fn into_list(self) -> Vec<String> {
        match self {
            ListOrText::List(list) => list,
            ListOrText::Text(text) => text.split(',').map(str::to_string).collect(),
        }
    }
}

/// A list in the file, or one comma-separated string as in the variable (a webhook's `events`).
pub(crate) fn list_or_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    ListOrText::deserialize(d).map(ListOrText::into_list)
}

/// `list_or_text` for a setting that may be absent (`cors_origins`, `api_keys`).
pub(crate) fn some_list_or_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    Option::<ListOrText>::deserialize(d).map(|v| v.map(ListOrText::into_list))
}
