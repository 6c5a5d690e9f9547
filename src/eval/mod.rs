//! Validation exactly like YOLOv5 v7.0 `val.py` and pycocotools, as a library a `val`
//! command drives image by image:
//!
//! 1. [`dataset`]: load a data YAML + YOLO labels or a COCO JSON ([`dataset::Dataset`]);
//! 2. [`preprocess`]: decode and letterbox one image ([`preprocess::preprocess_file`], a pure
//!    function safe to call from rayon), using [`jpeg`] for libjpeg-turbo's pixels and
//!    [`resize`] for OpenCV's arithmetic;
//! 3. a backend runs the model;
//! 4. [`nms`]: [`nms::non_max_suppression`] then [`nms::scale_to_original`];
//! 5. [`metrics`]: [`metrics::ValAccumulator::add_image`] per image (in dataset order),
//!    [`metrics::ValAccumulator::finish`] at the end; [`coco`]: results per image with
//!    [`coco::to_coco_results`], COCOeval with [`coco::evaluate`].
//!
//! [`types`] holds what these steps pass between them: image ids, the letterbox geometry,
//! detections and the COCO category map.

pub mod coco;
pub mod dataset;
pub mod jpeg;
pub mod metrics;
pub mod nms;
pub mod preprocess;
pub mod resize;
pub mod types;
pub mod validate;
pub mod validator;
