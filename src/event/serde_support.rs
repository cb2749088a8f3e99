//! serde for `Event`: a flat record with the category as its name.

use super::*;
use alloc::borrow::Cow;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct EventRecord<'a> {
    id: EventId,
    audience: Audience,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    category: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    occurred_at: DateTime<Utc>,
}

impl<C: Category> Serialize for Event<C> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EventRecord {
            id: self.id(),
            audience: self.audience(),
            event_type: Cow::Borrowed(self.event_type()),
            category: Cow::Borrowed(self.category().name()),
            data: Cow::Borrowed(self.data()),
            occurred_at: self.occurred_at(),
        }
        .serialize(serializer)
    }
}

impl<'de, C: Category> Deserialize<'de> for Event<C> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let record = EventRecord::deserialize(deserializer)?;
        let category = C::from_name(&record.category)
            .ok_or_else(|| D::Error::custom(alloc::format!("unknown category '{}'", record.category)))?;
        Event::from_parts(
            record.id,
            record.audience,
            &record.event_type,
            category,
            record.data.into_owned(),
            record.occurred_at,
        )
        .map_err(D::Error::custom)
    }
}
