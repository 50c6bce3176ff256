//! Schemas of the types that serialise as something other than their fields, for the
//! OpenAPI document of `usersync-web` (feature `openapi`).

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, ArrayItems, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::address::{DomainName, EmailAddress};
use crate::plan::{Change, FieldValue};

fn text(format: KnownFormat, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(format)))
        .description(Some(description))
        .into()
}

impl PartialSchema for EmailAddress {
    fn schema() -> RefOr<Schema> {
        text(KnownFormat::Email, "A mailbox address, lower-case.")
    }
}

impl ToSchema for EmailAddress {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EmailAddress")
    }
}

impl PartialSchema for DomainName {
    fn schema() -> RefOr<Schema> {
        text(
            KnownFormat::Hostname,
            "A mail domain, lower-case; an internationalised name in its punycode form.",
        )
    }
}

impl ToSchema for DomainName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DomainName")
    }
}

impl PartialSchema for Change {
    /// `[before, after]`.
    fn schema() -> RefOr<Schema> {
        let value = match FieldValue::schema() {
            RefOr::T(schema) => schema,
            RefOr::Ref(_) => unreachable!("a derived schema is inline"),
        };
        ArrayBuilder::new()
            .prefix_items([value.clone(), value])
            .items(ArrayItems::False)
            .min_items(Some(2))
            .description(Some("A field's value before and after: [before, after]."))
            .into()
    }
}

impl ToSchema for Change {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Change")
    }
}
