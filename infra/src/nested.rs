//! Turns a set of resources written for the parent template into a child template of an
//! `AWS::CloudFormation::Stack`: whatever the resources refer to outside themselves becomes a
//! child Parameter, which the parent passes in.
//!
//! - `Ref X` of a parent Parameter: the child declares X with the parent's definition (no
//!   Default); the parent passes `Ref X`.
//! - `Ref X` of a parent resource: a String Parameter X; the parent passes `Ref X`.
//! - `Fn::GetAtt [X, A]` and `${X.A}` in a `Fn::Sub`: a String Parameter `XA`
//!   (`LoadBalancerDNSName`); the parent passes the `GetAtt`.
//! - A parent resource with a Condition is passed as `Fn::If [condition, value, ""]` (the
//!   child uses it only under the same condition).
//! - Conditions the resources use are copied with what they refer to; so are Mappings.
//! - A `DependsOn` on a parent resource moves to the stack resource.
//!
//! So the per-developer modules write their resources once, and the same code serves host 1
//! (in the parent) and hosts 2.. (in children).

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// The parent template's sections a child may refer to.
pub struct Parent<'a> {
    /// Parameters.
    pub parameters: &'a Map<String, Value>,
    /// Conditions.
    pub conditions: &'a Map<String, Value>,
    /// Mappings.
    pub mappings: &'a Map<String, Value>,
    /// Resources.
    pub resources: &'a Map<String, Value>,
}

/// A child template and what the parent's stack resource must give it.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// The child template.
    pub template: Value,
    /// The stack resource's `Parameters`.
    pub parameters: Map<String, Value>,
    /// Parent resources the child's resources depended on: the stack resource's `DependsOn`.
    pub depends_on: Vec<String>,
}

#[derive(Default)]
struct Needs {
    refs: BTreeSet<String>,
    atts: BTreeSet<(String, String)>,
    conditions: BTreeSet<String>,
    mappings: BTreeSet<String>,
}

/// The child Parameter that carries `GetAtt [resource, attribute]`.
pub fn attribute_parameter(resource: &str, attribute: &str) -> String {
    format!("{resource}{}", attribute.replace('.', ""))
}

fn walk(v: &mut Value, local: &BTreeSet<String>, needs: &mut Needs) {
    match v {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(name)) = map.get("Ref") {
                    if !name.starts_with("AWS::") && !local.contains(name) {
                        needs.refs.insert(name.clone());
                    }
                    return;
                }
                if let Some(Value::Array(a)) = map.get("Fn::GetAtt")
                    && let [Value::String(r), Value::String(att)] = a.as_slice()
                {
                    if !local.contains(r) {
                        let param = attribute_parameter(r, att);
                        needs.atts.insert((r.clone(), att.clone()));
                        *v = json!({ "Ref": param });
                    }
                    return;
                }
                if let Some(sub) = map.get_mut("Fn::Sub") {
                    walk_sub(sub, local, needs);
                    return;
                }
                if let Some(Value::String(c)) = map.get("Condition") {
                    needs.conditions.insert(c.clone());
                    return;
                }
                if let Some(Value::Array(a)) = map.get_mut("Fn::If") {
                    if let Some(Value::String(c)) = a.first() {
                        needs.conditions.insert(c.clone());
                    }
                    for x in a.iter_mut().skip(1) {
                        walk(x, local, needs);
                    }
                    return;
                }
                if let Some(Value::Array(a)) = map.get_mut("Fn::FindInMap") {
                    if let Some(Value::String(m)) = a.first() {
                        needs.mappings.insert(m.clone());
                    }
                    for x in a.iter_mut().skip(1) {
                        walk(x, local, needs);
                    }
                    return;
                }
            }
            for x in map.values_mut() {
                walk(x, local, needs);
            }
        }
        Value::Array(a) => {
            for x in a {
                walk(x, local, needs);
            }
        }
        _ => {}
    }
}

/// A `Fn::Sub`: its `${X}` and `${X.A}` placeholders, except its own variables.
fn walk_sub(sub: &mut Value, local: &BTreeSet<String>, needs: &mut Needs) {
    let mut own = BTreeSet::new();
    if let Value::Array(a) = sub
        && let Some(vars) = a.get_mut(1)
    {
        if let Some(m) = vars.as_object() {
            own.extend(m.keys().cloned());
        }
        walk(vars, local, needs);
    }
    let text = match sub {
        Value::String(t) => t,
        Value::Array(a) => match a.get_mut(0) {
            Some(Value::String(t)) => t,
            _ => return,
        },
        _ => return,
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let replaced = if name.starts_with('!') || own.contains(name) {
            name.to_string()
        } else if let Some((r, att)) = name.split_once('.') {
            if local.contains(r) || r.starts_with("AWS::") {
                name.to_string()
            } else {
                needs.atts.insert((r.to_string(), att.to_string()));
                attribute_parameter(r, att)
            }
        } else {
            if !name.starts_with("AWS::") && !local.contains(name) {
                needs.refs.insert(name.to_string());
            }
            name.to_string()
        };
        out.push_str("${");
        out.push_str(&replaced);
        out.push('}');
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    *text = out;
}

/// `value`, or `Fn::If [c, value, ""]` when the parent resource `id` has Condition `c`.
fn guarded(parent: &Parent<'_>, id: &str, value: Value) -> Value {
    match parent.resources.get(id).and_then(|r| r.get("Condition")) {
        Some(Value::String(c)) => json!({ "Fn::If": [c, value, ""] }),
        _ => value,
    }
}

/// A parent Parameter's definition for the child: the same constraints, no Default (the
/// parent always passes it), and an SSM-typed parameter becomes the type of its value.
fn child_parameter(def: &Value) -> Value {
    let mut def = def.clone();
    if let Some(obj) = def.as_object_mut() {
        obj.remove("Default");
        if let Some(Value::String(t)) = obj.get("Type")
            && let Some(inner) = t
                .strip_prefix("AWS::SSM::Parameter::Value<")
                .and_then(|t| t.strip_suffix('>'))
        {
            let inner = inner.to_string();
            obj.insert("Type".into(), Value::String(inner));
        }
    }
    def
}

/// The child template of `resources` (written as if they were in `parent`).
pub fn child(description: &str, resources: Map<String, Value>, parent: &Parent<'_>) -> Child {
    let local: BTreeSet<String> = resources.keys().cloned().collect();
    let mut needs = Needs::default();
    let mut resources = resources;
    let mut depends_on = BTreeSet::new();
    for resource in resources.values_mut() {
        let Some(obj) = resource.as_object_mut() else {
            continue;
        };
        if let Some(Value::String(c)) = obj.get("Condition") {
            needs.conditions.insert(c.clone());
        }
        if let Some(dep) = obj.remove("DependsOn") {
            let list: Vec<String> = match dep {
                Value::String(d) => vec![d],
                Value::Array(a) => a
                    .into_iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            let (inside, outside): (Vec<String>, Vec<String>) =
                list.into_iter().partition(|d| local.contains(d));
            depends_on.extend(outside);
            if !inside.is_empty() {
                obj.insert("DependsOn".into(), json!(inside));
            }
        }
        if let Some(p) = obj.get_mut("Properties") {
            walk(p, &local, &mut needs);
        }
    }

    // Conditions, with the conditions and parameters they use.
    let mut conditions = Map::new();
    let mut queue: Vec<String> = needs.conditions.iter().cloned().collect();
    while let Some(c) = queue.pop() {
        if conditions.contains_key(&c) {
            continue;
        }
        let Some(def) = parent.conditions.get(&c) else {
            debug_assert!(false, "condition {c} not in the parent");
            continue;
        };
        let mut def = def.clone();
        let before = needs.conditions.clone();
        walk(&mut def, &BTreeSet::new(), &mut needs);
        queue.extend(needs.conditions.difference(&before).cloned());
        conditions.insert(c, def);
    }

    let mut parameters = Map::new();
    let mut passed = Map::new();
    for name in &needs.refs {
        if let Some(def) = parent.parameters.get(name) {
            parameters.insert(name.clone(), child_parameter(def));
            passed.insert(name.clone(), json!({ "Ref": name }));
        } else if parent.resources.contains_key(name) {
            parameters.insert(
                name.clone(),
                json!({ "Type": "String", "Description": format!("Ref {name} of the parent stack") }),
            );
            passed.insert(name.clone(), guarded(parent, name, json!({ "Ref": name })));
        } else {
            debug_assert!(
                false,
                "{name} is neither a parameter nor a resource of the parent"
            );
        }
    }
    for (r, att) in &needs.atts {
        let name = attribute_parameter(r, att);
        parameters.insert(
            name.clone(),
            json!({ "Type": "String", "Description": format!("GetAtt {r}.{att} of the parent stack") }),
        );
        passed.insert(name, guarded(parent, r, json!({ "Fn::GetAtt": [r, att] })));
    }
    let mappings: Map<String, Value> = needs
        .mappings
        .iter()
        .filter_map(|m| parent.mappings.get(m).map(|v| (m.clone(), v.clone())))
        .collect();

    let mut template = Map::new();
    template.insert("AWSTemplateFormatVersion".into(), json!("2010-09-09"));
    template.insert("Description".into(), json!(description));
    template.insert("Parameters".into(), Value::Object(parameters));
    if !mappings.is_empty() {
        template.insert("Mappings".into(), Value::Object(mappings));
    }
    if !conditions.is_empty() {
        template.insert("Conditions".into(), Value::Object(conditions));
    }
    template.insert("Resources".into(), Value::Object(resources));
    Child {
        template: Value::Object(template),
        parameters: passed,
        depends_on: depends_on.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_references_become_parameters_the_parent_passes() {
        let parameters = json!({
            "ProjectName": { "Type": "String", "Default": "p", "AllowedPattern": "[a-z]+" },
            "Ami": { "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>", "Default": "/x" },
            "Sso": { "Type": "String", "Default": "none" },
        });
        let conditions = json!({
            "UseSso": { "Fn::Not": [{ "Fn::Equals": [{ "Ref": "Sso" }, "none"] }] },
            "Both": { "Fn::And": [{ "Condition": "UseSso" }, { "Fn::Equals": ["a", "a"] }] },
        });
        let parent_resources = json!({
            "Lb": { "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer" },
            "Pool": { "Type": "AWS::Cognito::UserPool", "Condition": "UseSso" },
            "Route": { "Type": "AWS::EC2::Route" },
        });
        let child_resources = json!({
            "Tg": {
                "Type": "T",
                "DependsOn": ["Route", "Other"],
                "Properties": {
                    "Name": { "Fn::Sub": "${ProjectName}-${Lb.DNSName}-${AWS::Region}-${!Literal}" },
                    "Var": { "Fn::Sub": ["${V}", { "V": { "Ref": "Ami" } }] },
                    "Arn": { "Fn::If": ["Both", { "Fn::GetAtt": ["Pool", "Arn"] }, { "Ref": "AWS::NoValue" }] },
                    "Mine": { "Ref": "Other" },
                },
            },
            "Other": { "Type": "T", "Properties": {} },
        });
        let empty = Map::new();
        let parent = Parent {
            parameters: parameters.as_object().unwrap(),
            conditions: conditions.as_object().unwrap(),
            mappings: &empty,
            resources: parent_resources.as_object().unwrap(),
        };
        let c = child(
            "test",
            child_resources.as_object().unwrap().clone(),
            &parent,
        );
        let t = &c.template;
        let tg = &t["Resources"]["Tg"];
        assert_eq!(
            tg["Properties"]["Name"],
            json!({ "Fn::Sub": "${ProjectName}-${LbDNSName}-${AWS::Region}-${!Literal}" })
        );
        assert_eq!(
            tg["Properties"]["Arn"]["Fn::If"][1],
            json!({ "Ref": "PoolArn" })
        );
        assert_eq!(tg["DependsOn"], json!(["Other"]));
        assert_eq!(c.depends_on, vec!["Route".to_string()]);
        let names: BTreeSet<&str> = t["Parameters"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            names,
            ["Ami", "LbDNSName", "PoolArn", "ProjectName", "Sso"]
                .into_iter()
                .collect()
        );
        assert_eq!(
            t["Parameters"]["Ami"],
            json!({ "Type": "AWS::EC2::Image::Id" })
        );
        assert_eq!(t["Parameters"]["ProjectName"]["AllowedPattern"], "[a-z]+");
        assert!(t["Parameters"]["ProjectName"].get("Default").is_none());
        assert_eq!(
            c.parameters["PoolArn"],
            json!({ "Fn::If": ["UseSso", { "Fn::GetAtt": ["Pool", "Arn"] }, ""] })
        );
        assert_eq!(
            c.parameters["LbDNSName"],
            json!({ "Fn::GetAtt": ["Lb", "DNSName"] })
        );
        assert_eq!(c.parameters["Sso"], json!({ "Ref": "Sso" }));
        let conds: BTreeSet<&str> = t["Conditions"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(conds, ["Both", "UseSso"].into_iter().collect());
    }
}
