//! Validation datasets: YOLOv5 data YAML + YOLO txt labels, or a COCO instances JSON.
//!
//! Semantics follow YOLOv5 v7.0 (`check_dataset`, `LoadImagesAndLabels`,
//! `verify_image_label`), with one deliberate difference: a relative `path:` is resolved
//! against the YAML's folder (YOLOv5 uses its own package folder), and the caller may
//! override `path:` with the dataset root.
//!
//! - `train`/`val`/`test`: a folder (all images below it), a list file (one image per line,
//!   `./x` relative to the list's folder, other relative entries relative to the working
//!   directory, as YOLOv5) or a list of those; images are filtered by extension, sorted and
//!   de-duplicated.
//! - Labels: the image path with its last `/images/` replaced by `/labels/` and its extension
//!   by `.txt`; rows `class xc yc w h` normalised (polygon rows become their bounding box);
//!   duplicates removed. A missing label file is a background image.
//! - A file that cannot be read, or a label with a negative value, a coordinate above 1, a
//!   non-integer class or a class outside `names` makes the image skipped and reported
//!   ([`ScanReport`]); a run never aborts for one file.
//! - `is_coco`: `val` is a single list ending in `coco/val2017.txt`, as val.py decides.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use image::{ImageDecoder, ImageReader};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::metrics::GroundTruth;
use super::types::{COCO80_TO_91, ImageId, Letterbox};
use crate::progress::Progress;

/// Image extensions YOLOv5 accepts (`IMG_FORMATS`).
pub const IMG_FORMATS: [&str; 10] = [
    "bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm",
];

/// Which image list of a data YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Names {
    List(Vec<String>),
    Map(BTreeMap<u32, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataYaml {
    #[serde(default)]
    path: Option<String>,
    train: Option<OneOrMany>,
    val: Option<OneOrMany>,
    #[serde(default)]
    test: Option<OneOrMany>,
    #[serde(default)]
    nc: Option<u32>,
    names: Names,
    /// A download script or URL: accepted, never run.
    #[serde(default, rename = "download")]
    _download: Option<serde::de::IgnoredAny>,
}

/// A resolved YOLOv5 data YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// The YAML file it came from.
    pub file: PathBuf,
    /// The dataset root every relative `train`/`val`/`test` entry was joined to.
    pub root: PathBuf,
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub test: Vec<PathBuf>,
    /// Class names by index (`nc` = its length).
    pub names: Vec<String>,
    /// val.py's `is_coco`: class indices map to COCO category ids in predictions.
    pub is_coco: bool,
}

/// Lexically normalises `a/./b/../c` to `a/c` (Python's `Path.resolve` on a missing path).
fn normalize(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let mut out = PathBuf::new();
    for comp in p.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

impl DataConfig {
    /// Reads a data YAML. `root` replaces its `path:` when given (for YAMLs whose `path:`
    /// points elsewhere); otherwise a relative `path:` is taken from the YAML's folder.
    pub fn load(file: &Path, root: Option<&Path>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read data YAML {}", file.display()))?;
        let raw: RawDataYaml = crate::yaml::parse(&text, file).context("invalid data YAML")?;
        let names = match raw.names {
            Names::List(v) => v,
            Names::Map(m) => {
                for (i, k) in m.keys().enumerate() {
                    if *k as usize != i {
                        bail!(
                            "{}: `names` keys must be 0..{} without gaps (missing {i})",
                            file.display(),
                            m.len()
                        );
                    }
                }
                m.into_values().collect()
            }
        };
        if names.is_empty() {
            bail!("{}: `names` is empty", file.display());
        }
        if let Some(nc) = raw.nc
            && nc as usize != names.len()
        {
            bail!(
                "{}: `nc: {nc}` but `names` has {} entries",
                file.display(),
                names.len()
            );
        }
        let yaml_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let given_root = root.map(Path::to_path_buf);
        let raw_path = raw.path.clone();
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => match raw.path.as_deref() {
                Some(p) if !p.is_empty() => yaml_dir.join(p),
                _ => yaml_dir,
            },
        };
        let root = normalize(&root);
        let resolve = |v: Option<OneOrMany>| -> Vec<PathBuf> {
            match v {
                None => Vec::new(),
                Some(OneOrMany::One(s)) => {
                    let x = normalize(&root.join(&s));
                    if !x.exists()
                        && let Some(rest) = s.strip_prefix("../")
                    {
                        return vec![normalize(&root.join(rest))];
                    }
                    vec![x]
                }
                Some(OneOrMany::Many(v)) => v.iter().map(|s| normalize(&root.join(s))).collect(),
            }
        };
        let single_val = matches!(raw.val, Some(OneOrMany::One(_)));
        let train = resolve(raw.train);
        let val = resolve(raw.val);
        let test = resolve(raw.test);
        if val.is_empty() {
            bail!("{}: `val` is missing or empty", file.display());
        }
        if !root.exists() && val.iter().any(|v| !v.exists()) {
            match &given_root {
                Some(given) => Err(crate::Needs::GivenDataRoot {
                    given: given.to_path_buf(),
                })?,
                None => Err(crate::Needs::DataRoot {
                    file: file.to_path_buf(),
                    path: raw_path.clone().unwrap_or_default(),
                    resolved: root.clone(),
                })?,
            }
        }
        let is_coco = single_val && val[0].to_string_lossy().ends_with("coco/val2017.txt");
        Ok(Self {
            file: file.to_path_buf(),
            root,
            train,
            val,
            test,
            names,
            is_coco,
        })
    }

    /// The files read to list the images of `split`: this YAML and the image-list files among
    /// the split's sources (not the images).
    pub fn files_read(&self, split: Split) -> anyhow::Result<Vec<PathBuf>> {
        let lists = self.split(split)?.iter().filter(|s| s.is_file()).cloned();
        Ok(std::iter::once(self.file.clone()).chain(lists).collect())
    }

    /// The sources of one split.
    pub fn split(&self, split: Split) -> anyhow::Result<&[PathBuf]> {
        let v = match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        };
        if v.is_empty() {
            bail!("{}: no `{split}` images listed", self.file.display());
        }
        Ok(v)
    }
}

/// One labelled box: class index and normalised `xc, yc, w, h` (f32, as YOLOv5 stores them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Label {
    pub class: u32,
    pub xywhn: [f32; 4],
    /// A COCO crowd region: ignored by val.py's metrics (YOLO labels have none), used by
    /// COCOeval through the annotation JSON.
    pub crowd: bool,
}

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub path: PathBuf,
    pub id: ImageId,
    /// Size after EXIF orientation.
    pub width: u32,
    pub height: u32,
    pub labels: Vec<Label>,
}

impl ImageRecord {
    /// The non-crowd labels in original-image pixels as val.py computes them for an image
    /// letterboxed with `lb`.
    pub fn ground_truth(&self, lb: &Letterbox) -> Vec<GroundTruth> {
        self.labels
            .iter()
            .filter(|l| !l.crowd)
            .map(|l| GroundTruth {
                class: l.class,
                bbox: lb.label_to_original(l.xywhn),
            })
            .collect()
    }
}

/// What the scan found, in YOLOv5's terms, plus one message per skipped or odd file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScanReport {
    /// Images with a label file (or annotations).
    pub found: usize,
    /// Images without a label file (backgrounds).
    pub missing: usize,
    /// Images with an empty label file.
    pub empty: usize,
    /// Images skipped because the image or its labels are unusable.
    pub corrupt: usize,
    /// Images skipped because their header claims more pixels than the limit.
    pub too_large: usize,
    /// No image has a label file: every image is a background and mAP is 0.
    pub no_labels: bool,
    pub messages: Vec<String>,
}

impl ScanReport {
    /// Whether anything was skipped or looks wrong (what `--strict` refuses).
    pub fn has_problems(&self) -> bool {
        self.corrupt > 0 || self.too_large > 0 || self.no_labels
    }
}

/// A loaded dataset, images in YOLOv5's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub images: Vec<ImageRecord>,
    pub names: Vec<String>,
    pub is_coco: bool,
    pub report: ScanReport,
    /// Images of more pixels than this are refused at decoding.
    pub max_pixels: u64,
}

impl Dataset {
    /// Number of labels (crowd regions excluded), val.py's "Instances".
    pub fn instances(&self) -> usize {
        self.images
            .iter()
            .map(|i| i.labels.iter().filter(|l| !l.crowd).count())
            .sum()
    }

    /// Loads one split of a data YAML with its YOLO labels (image headers and label files
    /// are read in parallel; `progress` counts images).
    /// Images whose header claims more than `max_pixels` pixels are skipped with a message.
    pub fn from_yolo(
        cfg: &DataConfig,
        split: Split,
        max_pixels: u64,
        progress: &dyn Progress,
    ) -> anyhow::Result<Self> {
        let files = list_images(cfg.split(split)?)?;
        let nc = cfg.names.len();
        progress.start(
            &format!("scanning {split} images"),
            Some(files.len() as u64),
        );
        let scanned: Vec<Scanned> = files
            .par_iter()
            .map(|p| {
                let r = scan_yolo_image(p, nc, max_pixels);
                progress.advance(1);
                r
            })
            .collect();
        progress.finish();
        let mut report = ScanReport::default();
        let mut images = Vec::with_capacity(scanned.len());
        for r in scanned {
            match r {
                Ok((rec, state, msg)) => {
                    match state {
                        LabelState::Found => report.found += 1,
                        LabelState::Missing => report.missing += 1,
                        LabelState::Empty => report.empty += 1,
                    }
                    report.messages.extend(msg);
                    images.push(rec);
                }
                Err(Skip::TooLarge(msg)) => {
                    report.too_large += 1;
                    report.messages.push(msg);
                }
                Err(Skip::Corrupt(msg)) => {
                    report.corrupt += 1;
                    report.messages.push(msg);
                }
            }
        }
        if report.found == 0 && report.empty == 0 && !images.is_empty() {
            report.no_labels = true;
            report.messages.push(format!(
                "no labels found for the {} images of {} (looked for label files such as {}): \
                 every image counts as background and mAP is 0",
                images.len(),
                cfg.split(split)?
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                label_path(&images[0].path).display()
            ));
        }
        if images.is_empty() {
            bail!(
                "no usable images in {}",
                cfg.split(split)?
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(Self {
            images,
            names: cfg.names.clone(),
            is_coco: cfg.is_coco,
            report,
            max_pixels,
        })
    }

    /// Loads a COCO instances JSON whose `file_name`s live in `image_dir`. Categories that
    /// are all standard COCO ids map to YOLOv5's 80 classes (`is_coco`); any other set maps
    /// to 0..n in id order. Crowd boxes are kept and flagged; segmentation is ignored.
    /// Images the JSON says have more than `max_pixels` pixels are skipped with a message.
    pub fn from_coco_json(
        annotations: &Path,
        image_dir: &Path,
        max_pixels: u64,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read(annotations)
            .with_context(|| format!("cannot read {}", annotations.display()))?;
        let raw: CocoJson = serde_json::from_slice(&text)
            .with_context(|| format!("invalid COCO annotation JSON {}", annotations.display()))?;
        let mut cats = raw.categories.clone();
        cats.sort_by_key(|c| c.id);
        let is_coco = !cats.is_empty() && cats.iter().all(|c| COCO80_TO_91.contains(&c.id));
        let (class_of, names): (HashMap<u64, u32>, Vec<String>) = if is_coco {
            let by_id: HashMap<u64, &str> = cats.iter().map(|c| (c.id, c.name.as_str())).collect();
            let names = COCO80_TO_91
                .iter()
                .map(|id| {
                    by_id
                        .get(id)
                        .map_or_else(|| format!("class{id}"), |n| n.to_string())
                })
                .collect();
            (
                COCO80_TO_91
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| (id, i as u32))
                    .collect(),
                names,
            )
        } else {
            (
                cats.iter()
                    .enumerate()
                    .map(|(i, c)| (c.id, i as u32))
                    .collect(),
                cats.iter().map(|c| c.name.clone()).collect(),
            )
        };
        if names.is_empty() {
            bail!("{}: no categories", annotations.display());
        }
        let mut anns: HashMap<u64, Vec<&CocoAnn>> = HashMap::new();
        for a in &raw.annotations {
            anns.entry(a.image_id).or_default().push(a);
        }
        let mut report = ScanReport::default();
        let mut images = Vec::with_capacity(raw.images.len());
        for img in &raw.images {
            let path = image_dir.join(&img.file_name);
            if !path.is_file() {
                report.corrupt += 1;
                report
                    .messages
                    .push(format!("{}: image file missing, skipped", path.display()));
                continue;
            }
            if img.width == 0 || img.height == 0 {
                report.corrupt += 1;
                report.messages.push(format!(
                    "{}: image size {}x{} in {}, skipped",
                    path.display(),
                    img.width,
                    img.height,
                    annotations.display()
                ));
                continue;
            }
            let pixels = u64::from(img.width) * u64::from(img.height);
            if pixels > max_pixels {
                report.too_large += 1;
                report.messages.push(format!(
                    "{}: skipped: {}x{} is {pixels} pixels, over the limit of {max_pixels}",
                    path.display(),
                    img.width,
                    img.height
                ));
                continue;
            }
            let (w, h) = (f64::from(img.width), f64::from(img.height));
            let mut labels: Vec<Label> = Vec::new();
            let mut bad = None;
            for a in anns.get(&img.id).map(Vec::as_slice).unwrap_or_default() {
                let Some(&class) = class_of.get(&a.category_id) else {
                    bad = Some(format!(
                        "annotation {} has unknown category {}",
                        a.id, a.category_id
                    ));
                    break;
                };
                let [x, y, bw, bh] = a.bbox;
                if bw <= 0.0 || bh <= 0.0 {
                    continue;
                }
                let xywhn = [
                    ((x + bw / 2.0) / w) as f32,
                    ((y + bh / 2.0) / h) as f32,
                    (bw / w) as f32,
                    (bh / h) as f32,
                ];
                if xywhn.iter().any(|v| !(*v >= 0.0 && *v <= 1.0)) {
                    bad = Some(format!(
                        "annotation {} box {:?} lies outside the {}x{} image",
                        a.id, a.bbox, img.width, img.height
                    ));
                    break;
                }
                let label = Label {
                    class,
                    xywhn,
                    crowd: a.iscrowd != 0,
                };
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
            if let Some(why) = bad {
                report.corrupt += 1;
                report
                    .messages
                    .push(format!("{}: {why}, skipped", path.display()));
                continue;
            }
            if labels.is_empty() {
                report.missing += 1;
            } else {
                report.found += 1;
            }
            images.push(ImageRecord {
                path,
                id: ImageId::Num(img.id),
                width: img.width,
                height: img.height,
                labels,
            });
        }
        if images.is_empty() {
            bail!(
                "{}: no usable images in {}",
                annotations.display(),
                image_dir.display()
            );
        }
        if raw.annotations.is_empty() {
            report.no_labels = true;
            report.messages.push(format!(
                "{} holds no annotations: every image counts as background and mAP is 0",
                annotations.display()
            ));
        }
        Ok(Self {
            images,
            names,
            is_coco,
            report,
            max_pixels,
        })
    }
}

#[derive(Debug, Deserialize)]
struct CocoJson {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnn>,
    categories: Vec<CocoCat>,
}

#[derive(Debug, Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Debug, Deserialize)]
struct CocoAnn {
    #[serde(default)]
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Debug, Clone, Deserialize)]
struct CocoCat {
    id: u64,
    name: String,
}

/// The image files of a split, in YOLOv5's order (sorted, de-duplicated).
pub fn list_images(sources: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    Ok(ImageListing::of(sources)?.images)
}

/// The images of some sources (folders and image-list files) and the folders walked to find
/// them: a file added to one of those folders can change the images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageListing {
    /// In YOLOv5's order: sorted, de-duplicated.
    pub images: Vec<PathBuf>,
    /// Every folder walked, each once, in walking order.
    pub folders: Vec<PathBuf>,
}

impl ImageListing {
    /// Lists `sources`: a folder gives every image below it (a folder reached twice, through a
    /// symbolic link or a loop of them, is walked once), a list file the images it names.
    pub fn of(sources: &[PathBuf]) -> anyhow::Result<Self> {
        let mut files: Vec<String> = Vec::new();
        let mut walk = Walk::default();
        for src in sources {
            if src.is_dir() {
                walk.folder(src, &mut files)
                    .with_context(|| format!("cannot list images in {}", src.display()))?;
            } else if src.is_file() {
                let text = std::fs::read_to_string(src)
                    .with_context(|| format!("cannot read image list {}", src.display()))?;
                let parent = format!("{}/", src.parent().unwrap_or(Path::new("")).display());
                for line in text.trim().lines() {
                    let line = line.trim_end_matches('\r');
                    if let Some(rest) = line.strip_prefix("./") {
                        files.push(format!("{parent}{rest}"));
                    } else if !line.is_empty() {
                        files.push(line.to_string());
                    }
                }
            } else {
                bail!("{} does not exist", src.display());
            }
        }
        files.retain(|f| {
            f.rsplit('.')
                .next()
                .is_some_and(|e| IMG_FORMATS.contains(&e.to_ascii_lowercase().as_str()))
        });
        files.sort();
        files.dedup();
        if files.is_empty() {
            bail!(
                "no images found in {}",
                sources
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(ImageListing {
            images: files.into_iter().map(PathBuf::from).collect(),
            folders: walk.folders,
        })
    }
}

/// The folders walked so far, by path and by what they resolve to.
#[derive(Default)]
struct Walk {
    folders: Vec<PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
}

impl Walk {
    /// Adds the files below `dir` whose name contains a dot (`glob('**/*.*')`, hidden entries
    /// skipped) to `out`, unless `dir` resolves to a folder already walked.
    fn folder(&mut self, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        if !self.seen.insert(dir.canonicalize()?) {
            return Ok(());
        }
        self.folders.push(dir.to_path_buf());
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                self.folder(&path, out)?;
            } else if name.contains('.') {
                out.push(path.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
}

/// YOLOv5 `img2label_paths` for one image.
pub fn label_path(image: &Path) -> PathBuf {
    let s = image.to_string_lossy();
    let swapped = match s.rfind("/images/") {
        Some(i) => format!("{}/labels/{}", &s[..i], &s[i + "/images/".len()..]),
        None => s.into_owned(),
    };
    let base = match swapped.rfind('.') {
        Some(i) => &swapped[..i],
        None => swapped.as_str(),
    };
    PathBuf::from(format!("{base}.txt"))
}

/// A scanned image with its label state and an optional warning, or why it is skipped.
type Scanned = Result<(ImageRecord, LabelState, Option<String>), Skip>;

/// Why an image is skipped, with the message that says so.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    /// The image or its labels cannot be used.
    Corrupt(String),
    /// Its header claims more pixels than the limit.
    TooLarge(String),
}

impl Skip {
    /// YOLOv5's message for an unusable image or label file.
    pub fn corrupt(path: &Path, why: impl fmt::Display) -> Self {
        Skip::Corrupt(format!(
            "{}: ignoring corrupt image/label: {why}",
            path.display()
        ))
    }

    pub fn message(&self) -> &str {
        match self {
            Skip::Corrupt(m) | Skip::TooLarge(m) => m,
        }
    }
}

enum LabelState {
    Found,
    Missing,
    Empty,
}

/// Image size after EXIF orientation, from the header only.
fn image_size(path: &Path) -> anyhow::Result<(u32, u32)> {
    let decoder = ImageReader::open(path)?
        .with_guessed_format()?
        .into_decoder()?;
    let (w, h) = decoder.dimensions();
    let mut decoder = decoder;
    let swap = matches!(
        decoder.orientation(),
        Ok(image::metadata::Orientation::Rotate90
            | image::metadata::Orientation::Rotate270
            | image::metadata::Orientation::Rotate90FlipH
            | image::metadata::Orientation::Rotate270FlipH)
    );
    Ok(if swap { (h, w) } else { (w, h) })
}

/// The size of an image (after EXIF orientation) from its header, or why validation skips it:
/// unreadable, smaller than 10 pixels a side, or over `max_pixels` pixels. Calibration skips
/// the same images with the same message.
pub fn check_image(path: &Path, max_pixels: u64) -> Result<(u32, u32), Skip> {
    let (width, height) = image_size(path).map_err(|e| Skip::corrupt(path, format!("{e:#}")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(Skip::TooLarge(format!(
            "{}: skipped: {width}x{height} is {pixels} pixels, over the limit of {max_pixels}",
            path.display()
        )));
    }
    if width < 10 || height < 10 {
        return Err(Skip::corrupt(
            path,
            format!("image size {width}x{height} < 10 pixels"),
        ));
    }
    Ok((width, height))
}

/// `verify_image_label` for one image: the record, or the reason it is skipped.
fn scan_yolo_image(path: &Path, nc: usize, max_pixels: u64) -> Scanned {
    let corrupt = |why: String| Skip::corrupt(path, why);
    let (width, height) = check_image(path, max_pixels)?;
    let lp = label_path(path);
    let (labels, state, msg) = if lp.is_file() {
        let text =
            std::fs::read_to_string(&lp).map_err(|e| corrupt(format!("{}: {e}", lp.display())))?;
        let (labels, msg) =
            parse_labels(&text, nc).map_err(|e| corrupt(format!("{}: {e}", lp.display())))?;
        let state = if labels.is_empty() {
            LabelState::Empty
        } else {
            LabelState::Found
        };
        (
            labels,
            state,
            msg.map(|m| format!("{}: {m}", path.display())),
        )
    } else {
        (Vec::new(), LabelState::Missing, None)
    };
    let record = ImageRecord {
        path: path.to_path_buf(),
        id: ImageId::from_path(path),
        width,
        height,
        labels,
    };
    Ok((record, state, msg))
}

/// Parses a YOLO label file for `nc` classes; `Ok` may carry a warning (duplicates removed).
pub fn parse_labels(text: &str, nc: usize) -> Result<(Vec<Label>, Option<String>), String> {
    let rows: Vec<Vec<&str>> = text
        .trim()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let num = |s: &str| -> Result<f32, String> {
        s.parse::<f64>()
            .map(|v| v as f32)
            .map_err(|_| format!("not a number: {s:?}"))
    };
    let mut lb: Vec<[f32; 5]> = Vec::new();
    if rows.iter().any(|r| r.len() > 6) {
        for r in &rows {
            let vals: Vec<f32> = r.iter().map(|s| num(s)).collect::<Result<_, _>>()?;
            if vals.len() < 3 || !(vals.len() - 1).is_multiple_of(2) {
                return Err(format!("polygon row with {} values", vals.len()));
            }
            let (xs, ys): (Vec<f32>, Vec<f32>) = vals[1..].chunks(2).map(|p| (p[0], p[1])).unzip();
            let fold =
                |v: &[f32], f: fn(f32, f32) -> f32| v.iter().copied().reduce(f).unwrap_or(0.0);
            let (x1, y1, x2, y2) = (
                fold(&xs, f32::min),
                fold(&ys, f32::min),
                fold(&xs, f32::max),
                fold(&ys, f32::max),
            );
            lb.push([vals[0], (x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1]);
        }
    } else {
        for r in &rows {
            if r.len() != 5 {
                return Err(format!(
                    "labels require 5 columns, {} columns detected",
                    r.len()
                ));
            }
            let v: Vec<f32> = r.iter().map(|s| num(s)).collect::<Result<_, _>>()?;
            lb.push([v[0], v[1], v[2], v[3], v[4]]);
        }
    }
    if let Some(v) = lb.iter().flatten().find(|v| v.is_nan() || **v < 0.0) {
        return Err(format!("negative label values {v}"));
    }
    if let Some(v) = lb.iter().flat_map(|r| &r[1..]).find(|v| **v > 1.0) {
        return Err(format!("non-normalized or out of bounds coordinates {v}"));
    }
    if let Some(r) = lb
        .iter()
        .find(|r| r[0].fract() != 0.0 || r[0] as usize >= nc)
    {
        return Err(format!("class {} is not one of the {nc} classes", r[0]));
    }
    let n = lb.len();
    let mut msg = None;
    let mut sorted = lb.clone();
    sorted.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    sorted.dedup();
    if sorted.len() < n {
        msg = Some(format!("{} duplicate labels removed", n - sorted.len()));
        lb = sorted;
    }
    let labels = lb
        .iter()
        .map(|r| Label {
            class: r[0] as u32,
            xywhn: [r[1], r[2], r[3], r[4]],
            crowd: false,
        })
        .collect();
    Ok((labels, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_yaml_forms_resolve_like_check_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        std::fs::create_dir_all(root.join("images/a")).unwrap();
        let yaml = dir.path().join("d.yaml");
        std::fs::write(
            &yaml,
            "path: ds\ntrain: [images/a, images/b]\nval: ../images/a\ntest: null\nnc: 2\nnames: {0: cat, 1: dog}\ndownload: bash x.sh\n",
        )
        .unwrap();
        let cfg = DataConfig::load(&yaml, None).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(cfg.root, root);
        assert_eq!(
            cfg.train,
            vec![root.join("images/a"), root.join("images/b")]
        );
        // a missing `../x` falls back to `x` under the root, as check_dataset does
        assert_eq!(cfg.val, vec![root.join("images/a")]);
        assert!(cfg.test.is_empty() && !cfg.is_coco);
        assert_eq!(cfg.names, vec!["cat", "dog"]);
        assert!(cfg.split(Split::Test).is_err());
        std::fs::write(&yaml, "val: v\nnc: 3\nnames: [a, b]\n").unwrap();
        assert!(format!("{:#}", DataConfig::load(&yaml, None).unwrap_err()).contains("nc: 3"));
        std::fs::write(&yaml, "val: v\nnames: {0: a, 2: b}\n").unwrap();
        assert!(DataConfig::load(&yaml, None).is_err());
    }

    #[test]
    fn a_missing_dataset_root_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("d.yaml");
        std::fs::write(&yaml, "path: /no/such/root\nval: images\nnames: [a]\n").unwrap();
        let err = format!("{:#}", DataConfig::load(&yaml, None).unwrap_err());
        assert!(
            err.contains("`path: /no/such/root`") && err.contains("does not exist"),
            "{err}"
        );
        let missing = dir.path().join("elsewhere");
        let err = DataConfig::load(&yaml, Some(&missing)).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(crate::Needs::GivenDataRoot { given }) if *given == missing),
            "{err:#}"
        );
        std::fs::create_dir_all(dir.path().join("ds/images")).unwrap();
        let cfg = DataConfig::load(&yaml, Some(&dir.path().join("ds"))).unwrap();
        assert_eq!(cfg.val, vec![dir.path().join("ds/images")]);
    }

    #[test]
    fn label_path_replaces_last_images_folder_and_extension() {
        assert_eq!(
            label_path(Path::new("/d/images/x/images/a.b.jpg")),
            PathBuf::from("/d/images/x/labels/a.b.txt")
        );
        assert_eq!(
            label_path(Path::new("/d/imgs/a.png")),
            PathBuf::from("/d/imgs/a.txt")
        );
    }

    #[test]
    fn image_ids_follow_val_py() {
        assert_eq!(
            ImageId::from_path(Path::new("/a/000000000009.jpg")),
            ImageId::Num(9)
        );
        assert_eq!(
            ImageId::from_path(Path::new("/a/img_1.jpg")),
            ImageId::Name("img_1".into())
        );
    }

    #[test]
    fn label_parsing_rejects_bad_rows_and_dedups() {
        let (l, msg) = parse_labels(
            "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\n",
            80,
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0].class, 0,
            "duplicates removed => rows sorted like np.unique"
        );
        assert!(msg.unwrap().contains("1 duplicate"));
        assert!(parse_labels("0 0.5 0.5 1.2 0.2", 80).is_err());
        assert!(parse_labels("-1 0.5 0.5 0.2 0.2", 80).is_err());
        assert!(parse_labels("80 0.5 0.5 0.2 0.2", 80).is_err());
        assert!(parse_labels("0 0.5 0.5 0.2", 80).is_err());
        assert!(parse_labels("0 a 0.5 0.2 0.2", 80).is_err());
        let (poly, _) = parse_labels("2 0.1 0.2 0.3 0.2 0.3 0.6", 80).unwrap();
        let want = [0.2, 0.4, 0.2, 0.4];
        assert!(
            poly[0]
                .xywhn
                .iter()
                .zip(want)
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{poly:?}"
        );
        assert!(parse_labels("", 80).unwrap().0.is_empty());
    }
}
