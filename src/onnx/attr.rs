//! Reading node attributes by name.

use super::proto::{AttributeProto, NodeProto};

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

/// An INT attribute.
pub fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).and_then(|a| a.i)
}

/// A FLOAT attribute.
pub fn attr_f32(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).and_then(|a| a.f)
}

/// An INTS attribute.
pub fn attr_ints<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

/// A STRING attribute, as UTF-8.
pub fn attr_str<'n>(node: &'n NodeProto, name: &str) -> Option<&'n str> {
    attr(node, name)
        .and_then(|a| a.s.as_deref())
        .and_then(|s| std::str::from_utf8(s).ok())
}
