//! Small helpers for writing CloudFormation as `serde_json::Value`: intrinsic functions, tags,
//! checkov skip metadata, and a resource map that refuses duplicate logical ids.

use serde_json::{Map, Value, json};

/// Value of the `ManagedBy` tag.
pub const MANAGED_BY: &str = "csagent-infra";

/// `{"Ref": name}`.
pub fn r#ref(name: &str) -> Value {
    json!({ "Ref": name })
}

/// `{"Fn::GetAtt": [resource, attribute]}`.
pub fn get_att(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

/// `{"Fn::Sub": text}`: `${Name}` is a Parameter, resource or pseudo parameter.
pub fn sub(text: impl Into<String>) -> Value {
    json!({ "Fn::Sub": text.into() })
}

/// `{"Fn::If": [condition, then, else]}`.
pub fn if_(condition: &str, then: Value, otherwise: Value) -> Value {
    json!({ "Fn::If": [condition, then, otherwise] })
}

/// `Fn::Sub` of `text` in which `${StackSuffix}` is the first 8 hex digits of the stack id's
/// UUID: the same for the life of a stack (updates keep it), different for a stack re-created
/// under the same name. For names that must not collide with what a deleted stack kept.
pub fn sub_with_stack_suffix(text: &str) -> Value {
    let uuid = json!({ "Fn::Select": [2, { "Fn::Split": ["/", r#ref("AWS::StackId")] }] });
    json!({ "Fn::Sub": [text, { "StackSuffix": { "Fn::Select": [0, { "Fn::Split": ["-", uuid] }] } }] })
}

/// `{"Ref": "AWS::NoValue"}`: drops the property (or list item) it stands for.
pub fn no_value() -> Value {
    r#ref("AWS::NoValue")
}

/// The tags every taggable resource carries, plus `extra` (e.g. `Name`, `Developer`).
pub fn tags(extra: &[(&str, Value)]) -> Value {
    let mut list = vec![
        json!({ "Key": "Project", "Value": r#ref("ProjectName") }),
        json!({ "Key": "Environment", "Value": r#ref("Environment") }),
        json!({ "Key": "ManagedBy", "Value": MANAGED_BY }),
        json!({ "Key": "CostCenter", "Value": r#ref("CostCenter") }),
    ];
    list.extend(
        extra
            .iter()
            .map(|(k, v)| json!({ "Key": k, "Value": v.clone() })),
    );
    Value::Array(list)
}

/// The same tags as a map, for resource types that take `{"Key": "Value"}` (AWS Backup).
pub fn tag_map(extra: &[(&str, Value)]) -> Value {
    let mut map = Map::new();
    map.insert("Project".into(), r#ref("ProjectName"));
    map.insert("Environment".into(), r#ref("Environment"));
    map.insert("ManagedBy".into(), Value::from(MANAGED_BY));
    map.insert("CostCenter".into(), r#ref("CostCenter"));
    for (k, v) in extra {
        map.insert((*k).to_string(), v.clone());
    }
    Value::Object(map)
}

/// `Name` tag value `<project>-<suffix>`.
pub fn name_tag(suffix: &str) -> (&'static str, Value) {
    ("Name", sub(format!("${{ProjectName}}-{suffix}")))
}

/// A resource of `kind` with `properties`.
pub fn resource(kind: &str, properties: Value) -> Value {
    json!({ "Type": kind, "Properties": properties })
}

/// Adds checkov skips to a resource's Metadata: `checkov: skip: [{id, comment}]`. Every skip
/// carries the reason it is acceptable here.
pub fn skip_checkov(mut resource: Value, skips: &[(&str, &str)]) -> Value {
    let list: Vec<Value> = skips
        .iter()
        .map(|(id, comment)| json!({ "id": id, "comment": comment }))
        .collect();
    if let Some(obj) = resource.as_object_mut() {
        let metadata = obj
            .entry("Metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = metadata.as_object_mut() {
            m.insert("checkov".into(), json!({ "skip": list }));
        }
    }
    resource
}

/// Sets a top-level resource attribute such as `DependsOn`, `Condition` or `DeletionPolicy`.
pub fn with(mut resource: Value, key: &str, value: Value) -> Value {
    if let Some(obj) = resource.as_object_mut() {
        obj.insert(key.into(), value);
    }
    resource
}

/// Resources by logical id. Adding the same id twice is a bug in this crate, so it panics in
/// debug builds (the tests) and keeps the first in release builds.
#[derive(Debug, Default)]
pub struct Resources(Map<String, Value>);

impl Resources {
    /// Adds `resource` under `id`.
    pub fn add(&mut self, id: impl Into<String>, resource: Value) {
        let id = id.into();
        debug_assert!(!self.0.contains_key(&id), "duplicate logical id {id}");
        self.0.entry(id).or_insert(resource);
    }

    /// The finished map.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    /// The resources so far.
    pub fn map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The resources, as a map.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}
