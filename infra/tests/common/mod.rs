//! Helpers the template tests share.

use serde_json::Value;

/// `v` as CloudFormation sees it when each condition in `conditions` has the given value:
/// `Fn::If` replaced by its branch, `AWS::NoValue` dropped. Panics on a condition not given.
pub fn resolve(v: &Value, conditions: &[(&str, bool)]) -> Option<Value> {
    match v {
        Value::Object(map) if map.len() == 1 && map.contains_key("Fn::If") => {
            let args = map["Fn::If"].as_array().unwrap();
            let name = args[0].as_str().unwrap();
            let value = conditions
                .iter()
                .find(|(c, _)| *c == name)
                .unwrap_or_else(|| panic!("condition {name} not given"))
                .1;
            resolve(&args[if value { 1 } else { 2 }], conditions)
        }
        Value::Object(map) if map.get("Ref") == Some(&Value::from("AWS::NoValue")) => None,
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter_map(|(k, x)| Some((k.clone(), resolve(x, conditions)?)))
                .collect(),
        )),
        Value::Array(list) => Some(Value::Array(
            list.iter().filter_map(|x| resolve(x, conditions)).collect(),
        )),
        other => Some(other.clone()),
    }
}
