//! Schema post-processing applied to every ccplant type (`#[schemars(transform = ...)]`).

use schemars::Schema;
use serde_json::Value;

/// Makes the descriptions of a ccplant type read well in `kubectl explain`:
///
/// - doc comments are wrapped at 100 columns; the line breaks inside a paragraph become spaces
///   (blank lines still separate paragraphs);
/// - an optional enum field keeps its own doc comment instead of the enum type's (kube's
///   `OptionalEnum` transform would otherwise copy the type's description over the field's).
///
/// Only this type's own description and those of its direct properties are touched: nested
/// ccplant types have the transform themselves, and the descriptions of k8s-openapi types
/// (which carry intentional line breaks) are left alone.
pub(crate) fn polish_descriptions(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    reflow(object.get_mut("description"));
    let Some(Value::Object(properties)) = object.get_mut("properties") else {
        return;
    };
    for property in properties.values_mut() {
        let Value::Object(property) = property else {
            continue;
        };
        reflow(property.get_mut("description"));
        document_default(property);
        if property.contains_key("description")
            && let Some(Value::Array(variants)) = property.get_mut("anyOf")
        {
            for variant in variants {
                if let Value::Object(variant) = variant {
                    variant.remove("description");
                }
            }
        }
    }
}

/// `kubectl explain` does not show a field's schema default: state it in the description.
fn document_default(property: &mut serde_json::Map<String, Value>) {
    let shown = match property.get("default") {
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Bool(_) | Value::Number(_))) => v.to_string(),
        _ => return,
    };
    if let Some(Value::String(text)) = property.get_mut("description")
        && !text.contains("Default")
    {
        text.push_str(&format!(" Default: {shown}."));
    }
}

/// A LabelSelector's schema with every list bounded (keeps CEL cost estimates and object
/// sizes finite): at most 32 expressions of at most 64 values.
pub(crate) fn bounded_label_selector(generator: &mut schemars::SchemaGenerator) -> Schema {
    let mut schema =
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>();
    // The generator may hand out a reference; inline it so the bounds apply here only.
    if let Some(Value::String(reference)) = schema.as_object().and_then(|o| o.get("$ref")).cloned()
    {
        let name = reference.rsplit('/').next().unwrap_or_default().to_string();
        if let Some(def) = generator.definitions().get(&name) {
            schema = Schema::try_from(def.clone()).unwrap_or(schema);
        }
    }
    if let Some(Value::Object(expressions)) = schema
        .as_object_mut()
        .and_then(|o| o.get_mut("properties"))
        .and_then(|p| p.get_mut("matchExpressions"))
    {
        expressions.insert("maxItems".into(), Value::from(32));
        if let Some(Value::Object(values)) = expressions
            .get_mut("items")
            .and_then(|i| i.get_mut("properties"))
            .and_then(|p| p.get_mut("values"))
        {
            values.insert("maxItems".into(), Value::from(64));
        }
    }
    schema
}

fn reflow(description: Option<&mut Value>) {
    if let Some(Value::String(text)) = description {
        *text = text
            .split("\n\n")
            .map(|paragraph| {
                paragraph
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflows_paragraphs_and_keeps_field_docs_of_optional_enums() {
        let mut schema = Schema::from(
            serde_json::json!({
                "description": "First line\nsecond line.\n\nNext paragraph\ncontinues.",
                "properties": {
                    "phase": {
                        "description": "Field doc\nwrapped.",
                        "anyOf": [{"description": "Type doc.", "enum": ["A"]}, {"enum": [null]}]
                    }
                }
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        polish_descriptions(&mut schema);
        assert_eq!(
            schema.to_value(),
            serde_json::json!({
                "description": "First line second line.\n\nNext paragraph continues.",
                "properties": {
                    "phase": {
                        "description": "Field doc wrapped.",
                        "anyOf": [{"enum": ["A"]}, {"enum": [null]}]
                    }
                }
            })
        );
    }
}
