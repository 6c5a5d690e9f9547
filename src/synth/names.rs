//! Class names written to the `names` metadata, in the exporter's format (`str(dict)`).

/// The 80 COCO class names in YOLOv5 order (`data/coco.yaml`).
pub(super) const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// COCO's names for 80 classes, `class0`, `class1`, ... otherwise.
pub(super) fn class_names(nc: usize) -> Vec<String> {
    if nc == COCO.len() {
        COCO.iter().map(|s| (*s).to_owned()).collect()
    } else {
        (0..nc).map(|i| format!("class{i}")).collect()
    }
}

/// Python's `str()` of `dict(enumerate(names))`, e.g. `{0: 'person', 1: 'bicycle'}`.
///
/// Strings are quoted the way Python's `repr` quotes them: single quotes unless the name holds a
/// single quote and no double quote; backslashes, the chosen quote and control characters are
/// escaped.
pub(super) fn python_dict_repr(names: &[String]) -> String {
    let items: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{i}: {}", python_str_repr(name)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        // Expected strings are what CPython 3.11 prints for str({0: ..., 1: ...}).
        let names = ["person".to_owned(), "it's".to_owned(), "a\"b'c".to_owned()];
        assert_eq!(
            python_dict_repr(&names),
            r#"{0: 'person', 1: "it's", 2: 'a"b\'c'}"#
        );
        assert_eq!(class_names(2), ["class0", "class1"]);
        assert_eq!(class_names(80)[79], "toothbrush");
    }
}
