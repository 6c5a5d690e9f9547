//! An indexed, read-only view over an ONNX graph, and the shape facts passes and analyses need.

mod shapes;
mod view;

pub use shapes::{Shapes, infer_shapes};
pub use view::{GraphView, attr_f32, attr_int, attr_ints, attr_str};
