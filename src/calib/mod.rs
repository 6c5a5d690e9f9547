//! Calibration: runs a backend on a fixed set of images, with exactly the validation
//! pre-processing, and collects the statistics recovering passes need
//! ([`Calibration`]).
//!
//! The images come from a dataset YAML (its `train` split, else `val`) or a folder; `count` of
//! them are drawn with a fixed seed. Each set is identified by the SHA-256 of its files' bytes,
//! recorded in the outputs ([`crate::onnx::metadata::CALIBRATION_KEY`]) so that `shears val`
//! can warn when it validates on images a model was calibrated on.
//!
//! Statistics are gathered from a copy of the model whose graph outputs are the tensors wanted
//! (Conv inputs or outputs), so the backend computes only what leads to them.

mod columns;
mod sites;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use faer::Mat;
use ndarray::{Array4, ArrayD};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use columns::{columns, sampled_positions};
pub use sites::{Calibration, ConvSite, InputStats, OutputSamples, conv_sites};

use crate::backend::{self, BackendSpec};
use crate::digest::{file_sha256, sha256_hex};
use crate::eval::dataset::{DataConfig, ImageListing, Skip, Split, check_image};
use crate::eval::preprocess::{DEFAULT_MAX_PIXELS, preprocess_file};
use crate::onnx::proto::{ModelProto, TypeProto, ValueInfoProto, type_proto};
use crate::progress::Progress;

/// Default number of calibration images.
pub const DEFAULT_IMAGES: usize = 128;

/// Default number of output positions per image whose columns a Conv's statistics sum.
pub const DEFAULT_POSITIONS: usize = 4096;

/// Output positions per image and Conv that [`Calibration::output_samples`] keeps. Per channel
/// that is 8,192 values over 32 images: enough for moments, and the samples of every Conv of
/// yolov5n over 32 images take 160 MB.
pub const OUTPUT_POSITIONS: usize = 256;

/// Where calibration images come from and how many to use (the pipeline's `calibration:` block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSpec {
    /// A dataset YAML (its `train` images, else `val`) or a folder of images.
    pub data: PathBuf,
    /// Replaces the YAML's `path:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_root: Option<PathBuf>,
    /// How many images, drawn with a fixed seed (all when there are fewer).
    #[serde(default = "default_images")]
    pub images: usize,
}

fn default_images() -> usize {
    DEFAULT_IMAGES
}

/// The chosen images and their identity.
#[derive(Debug, Clone)]
pub struct CalibrationSet {
    pub source: PathBuf,
    /// The files besides the images that were read to list them: the YAML and its image lists.
    pub listed_by: Vec<PathBuf>,
    /// The folders walked to list them: a file added there can change the set.
    pub folders: Vec<PathBuf>,
    pub images: Vec<PathBuf>,
    /// SHA-256 of each image file, hex, in the order of `images`.
    pub image_sha256: Vec<String>,
    /// What the user should be told: images skipped (with `val`'s message), duplicates, fewer
    /// images than asked for.
    pub messages: Vec<String>,
}

impl CalibrationSet {
    /// Lists the images of `spec` and draws `spec.images` of them (seed 0), in path order.
    /// Images are drawn as `val` reads them: an image `val` skips is skipped with its message
    /// and another drawn, and a file whose content was drawn already counts once.
    pub fn resolve(spec: &CalibrationSpec) -> Result<Self> {
        if spec.images == 0 {
            bail!("calibration needs at least one image (images: 0)");
        }
        let data = &spec.data;
        let (listing, listed_by) = if data.is_dir() {
            (ImageListing::of(std::slice::from_ref(data))?, Vec::new())
        } else {
            let config = DataConfig::load(data, spec.data_root.as_deref())?;
            let split = if config.train.is_empty() {
                Split::Val
            } else {
                Split::Train
            };
            let listing = ImageListing::of(config.split(split)?)
                .with_context(|| format!("calibration images of {}", data.display()))?;
            (listing, config.files_read(split)?)
        };
        let mut candidates = listing.images;
        candidates.shuffle(&mut ChaCha8Rng::seed_from_u64(0));
        let mut drawn: Vec<(PathBuf, String)> = Vec::new();
        let mut messages = Vec::new();
        let mut first_of: HashMap<String, PathBuf> = HashMap::new();
        let mut next = 0;
        while drawn.len() < spec.images && next < candidates.len() {
            let batch = &candidates[next..(next + spec.images - drawn.len()).min(candidates.len())];
            next += batch.len();
            let checked: Vec<Result<String, Skip>> = batch
                .par_iter()
                .map(|p| {
                    check_image(p, DEFAULT_MAX_PIXELS)?;
                    file_sha256(p).map_err(|e| Skip::corrupt(p, format!("{e:#}")))
                })
                .collect();
            for (path, checked) in batch.iter().zip(checked) {
                match checked {
                    Err(skip) => messages.push(skip.message().to_string()),
                    Ok(sha) => match first_of.get(&sha) {
                        Some(first) => messages.push(format!(
                            "{}: the same image as {}, counted once",
                            path.display(),
                            first.display()
                        )),
                        None => {
                            first_of.insert(sha.clone(), path.clone());
                            drawn.push((path.clone(), sha));
                        }
                    },
                }
            }
        }
        if drawn.is_empty() {
            bail!("no usable calibration images in {}", data.display());
        }
        if drawn.len() < spec.images {
            messages.push(format!(
                "{} has {} usable calibration images, fewer than the {} asked for: all are used",
                data.display(),
                drawn.len(),
                spec.images
            ));
        }
        drawn.sort();
        let (images, image_sha256) = drawn.into_iter().unzip();
        Ok(Self {
            source: data.clone(),
            listed_by,
            folders: listing.folders,
            images,
            image_sha256,
            messages,
        })
    }

    /// Every file the set was read from: its YAML and image lists, and the images.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.listed_by.iter().chain(&self.images)
    }

    /// SHA-256 over the sorted image hashes: one name for the whole set.
    pub fn set_sha256(&self) -> String {
        let mut sorted = self.image_sha256.clone();
        sorted.sort();
        sha256_hex(sorted.join("\n").as_bytes())
    }

    /// What outputs record under [`crate::onnx::metadata::CALIBRATION_KEY`].
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source.display().to_string(),
            "images": self.images.len(),
            "sha256": self.set_sha256(),
            "image_sha256": self.image_sha256,
        })
    }
}

/// The network inputs of the set's images letterboxed to `size`: validation's pre-processing.
pub fn load_inputs(set: &CalibrationSet, size: u32) -> Result<Vec<Array4<f32>>> {
    set.images
        .par_iter()
        .map(|p| preprocess_file(p, size, DEFAULT_MAX_PIXELS).map(|pre| pre.tensor))
        .collect()
}

/// [`Calibration`] by running a backend on a [`CalibrationSet`].
pub struct Calibrator<'p> {
    set: CalibrationSet,
    spec: BackendSpec,
    positions: usize,
    /// Pre-processed images, made on first use (they depend on the model's input size).
    inputs: Vec<Array4<f32>>,
    progress: &'p dyn Progress,
}

impl<'p> Calibrator<'p> {
    pub fn new(set: CalibrationSet, spec: BackendSpec, progress: &'p dyn Progress) -> Self {
        Self {
            set,
            spec,
            positions: DEFAULT_POSITIONS,
            inputs: Vec::new(),
            progress,
        }
    }

    pub fn set(&self) -> &CalibrationSet {
        &self.set
    }

    /// `copies` sessions of `model` on `spec` whose outputs are `tensors`, opened in parallel
    /// from one encoding; pre-processes the images on first use.
    fn open(
        &mut self,
        model: &ModelProto,
        tensors: &[String],
        spec: &BackendSpec,
        copies: usize,
    ) -> Result<Vec<Box<dyn backend::Backend>>> {
        let bytes = backend::encode_runnable(&with_outputs(model, tensors)?, spec.engine())?;
        let sessions = (0..copies.max(1))
            .into_par_iter()
            .map(|_| backend::open(spec, &bytes).context("calibration: cannot run the model"))
            .collect::<Result<Vec<_>>>()?;
        let [_, _, h, w] = sessions[0].input_shape();
        if self.inputs.is_empty() {
            if h != w {
                bail!("calibration: the model's input {h}x{w} is not square");
            }
            self.inputs = load_inputs(&self.set, h as u32)?;
        } else if self.inputs[0].shape()[2] != h {
            bail!("calibration: models of different input sizes share one calibrator");
        }
        Ok(sessions)
    }
}

impl Calibration for Calibrator<'_> {
    fn input_stats(&mut self, model: &ModelProto, sites: &[ConvSite]) -> Result<Vec<InputStats>> {
        let mut keys = Vec::new();
        let mut key_of = Vec::with_capacity(sites.len());
        let mut index: HashMap<_, usize> = HashMap::new();
        for site in sites {
            let next = keys.len();
            let k = *index.entry(site.input_key()).or_insert(next);
            if k == next {
                keys.push(site.clone());
            }
            key_of.push(k);
        }
        let mut tensors: Vec<String> = Vec::new();
        let tensor_of: Vec<usize> = keys
            .iter()
            .map(|s| match tensors.iter().position(|t| *t == s.input) {
                Some(i) => i,
                None => {
                    tensors.push(s.input.clone());
                    tensors.len() - 1
                }
            })
            .collect();
        let spec = self.spec;
        let mut session = self.open(model, &tensors, &spec, 1)?.remove(0);
        let width = |s: &ConvSite| s.columns() + 1;
        let mut grams: Vec<Mat<f64>> = keys
            .iter()
            .map(|s| Mat::zeros(width(s), width(s)))
            .collect();
        self.progress
            .start("calibrating", Some(self.inputs.len() as u64));
        for (image, input) in self.inputs.iter().enumerate() {
            let current = session.run_all(input.view())?;
            let positions = self.positions;
            grams
                .par_iter_mut()
                .zip(&keys)
                .enumerate()
                .try_for_each(|(k, (gram, site))| {
                    let act = current[tensor_of[k]].view();
                    let shape = act.shape();
                    let seed = (image as u64) << 32 | k as u64;
                    let at = sampled_positions(site, shape[2], shape[3], positions, seed);
                    columns::add_gram_lower(gram, &columns(site, &act, &at)?);
                    anyhow::Ok(())
                })?;
            self.progress.advance(1);
        }
        self.progress.finish();
        grams.iter_mut().for_each(columns::mirror_lower);
        Ok(key_of
            .iter()
            .map(|&k| InputStats {
                gram: grams[k].clone(),
            })
            .collect())
    }

    /// Runs the images on as many single-threaded sessions as the spec has threads, one image
    /// per session at a time: these runs stop early in the graph, where threads inside one
    /// inference have little to share.
    fn output_samples(
        &mut self,
        model: &ModelProto,
        sites: &[ConvSite],
        images: usize,
    ) -> Result<Vec<OutputSamples>> {
        let mut tensors: Vec<String> = sites.iter().map(|s| s.output.clone()).collect();
        tensors.dedup();
        if tensors.len() != sites.len() {
            bail!("calibration: two sites name the same Conv output");
        }
        let images = images.min(self.set.images.len());
        let workers = self.spec.threads().clamp(1, images.max(1));
        let mut sessions = self.open(model, &tensors, &self.spec.with_threads(1), workers)?;
        let inputs = &self.inputs;
        // Worker `w` takes images w, w + workers, ...; each image's samples are kept apart and
        // joined in image order, so the result does not depend on the number of workers.
        let per_worker = sessions
            .par_iter_mut()
            .enumerate()
            .map(|(w, session)| {
                (w..images)
                    .step_by(workers)
                    .map(|image| {
                        let outputs = session.run_all(inputs[image].view())?;
                        sites
                            .iter()
                            .zip(&outputs)
                            .map(|(site, out)| sample_output(site, out, image))
                            .collect::<Result<Vec<_>>>()
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut samples: Vec<OutputSamples> = sites
            .iter()
            .map(|s| OutputSamples {
                values: vec![Vec::new(); s.out_channels],
            })
            .collect();
        for image in 0..images {
            for (all, one) in samples
                .iter_mut()
                .zip(&per_worker[image % workers][image / workers])
            {
                for (channel, values) in all.values.iter_mut().zip(one) {
                    channel.extend_from_slice(values);
                }
            }
        }
        Ok(samples)
    }

    fn describe(&self) -> serde_json::Value {
        self.set.record()
    }

    fn progress(&self) -> &dyn Progress {
        self.progress
    }
}

/// Per channel, the values of a Conv output `[1, C, H, W]` of calibration image `image` at
/// [`output_positions`].
fn sample_output(site: &ConvSite, out: &ArrayD<f32>, image: usize) -> Result<Vec<Vec<f32>>> {
    let shape = out.shape();
    if shape.len() != 4 || shape[0] != 1 || shape[1] != site.out_channels {
        bail!(
            "{}: output {:?} has shape {shape:?}, expected [1, {}, H, W]",
            site.name,
            site.output,
            site.out_channels
        );
    }
    let plane = shape[2] * shape[3];
    let positions = output_positions(plane, image);
    let data = out.as_standard_layout();
    let data = data.as_slice().expect("standard layout");
    Ok((0..site.out_channels)
        .map(|c| positions.iter().map(|&p| data[c * plane + p]).collect())
        .collect())
}

/// The positions of a `plane`-sized output map that image `image` contributes: all of them when
/// there are at most [`OUTPUT_POSITIONS`], else that many drawn with a seed of the image and the
/// map size (the same for every Conv and model), in increasing order.
fn output_positions(plane: usize, image: usize) -> Vec<usize> {
    if plane <= OUTPUT_POSITIONS {
        return (0..plane).collect();
    }
    let seed = (image as u64) << 32 | plane as u64;
    let mut chosen = sample(
        &mut ChaCha8Rng::seed_from_u64(seed),
        plane,
        OUTPUT_POSITIONS,
    )
    .into_vec();
    chosen.sort_unstable();
    chosen
}

/// A copy of `model` whose graph outputs are `tensors` (float32, shape left to the backend).
fn with_outputs(model: &ModelProto, tensors: &[String]) -> Result<ModelProto> {
    let mut probe = model.clone();
    let graph = probe.graph.as_mut().context("the model has no graph")?;
    graph.output = tensors
        .iter()
        .map(|name| ValueInfoProto {
            name: Some(name.clone()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(1),
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Ok(probe)
}
