//! An indexed, read-only view over an ONNX graph, the shape facts passes and analyses need, the
//! edits passes make ([`edit`]) and the consistency check run after every pass.

mod check;
pub mod edit;
mod shapes;
mod sparse;
mod view;

pub use crate::onnx::attr::{attr_f32, attr_int, attr_ints, attr_str};
pub use check::Consistency;
pub use shapes::{DEFAULT_IMGSZ, Shapes, infer_shapes, infer_undeclared_shapes};
pub use sparse::densify_sparse;
pub use view::GraphView;
