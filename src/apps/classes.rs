//! Class labels of a class-per-folder dataset (`in/<class>/<name>.<ext>`, torchvision's
//! `ImageFolder` layout), for anonymizing or augmenting it with a class-conditional model
//! (Patched Diffusion) or classifier guidance (NCSN++): each image is sampled with the label
//! of its top-level folder.
//!
//! How folder names become labels ([`ClassFolders`]): by their number (`0/`, `207/`), by
//! their place in sorted order (what `ImageFolder` does), or by a map read from a JSON file
//! ([`ClassFolders::read_map`]: `{"cat": 3, ...}`, or ImageNet's `imagenet_class_index.json`,
//! `{"0": ["n01440764", "tench"], ...}`). Sorted order numbers the folders that are THERE:
//! for a subset of a model's classes (ten ImageNet classes for a 1000-class model) it gives
//! wrong labels, so use numbered folders or a map for those.
//!
//! ```
//! use boomerang::apps::classes::{ClassFolders, FolderClasses};
//! use boomerang::apps::paths::RelPath;
//! let images = ["dog/a.png", "cat/b.png", "dog/c.png"].map(|p| RelPath::new(p).unwrap());
//! let labels = FolderClasses::new(&ClassFolders::Auto, &images)?;
//! assert_eq!(labels.label_of(&images[0])?, 1); // sorted: cat = 0, dog = 1
//! assert_eq!(labels.describe(), "2 class folders by sorted name: cat=0, dog=1");
//! # Ok::<(), boomerang::Error>(())
//! ```

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use serde::Deserialize;

use crate::apps::paths::{os_bytes, read_regular, RelPath};
use crate::{Error, Result};

/// The largest class map file read.
pub const MAX_CLASS_MAP_BYTES: u64 = 16 << 20;

/// The largest label accepted (far above any released model's class count).
pub const MAX_LABEL: i64 = 1 << 24;

/// How the names of class folders become labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassFolders {
    /// [`Numbered`](ClassFolders::Numbered) when every class folder's name is a number,
    /// else [`Sorted`](ClassFolders::Sorted).
    Auto,
    /// Folders named by their label: `0/`, `1/`, `207/`.
    Numbered,
    /// `ImageFolder`'s rule: the label is the folder's index among the dataset's class
    /// folders sorted by name.
    Sorted,
    /// An explicit map from folder name to label; every class folder must be in it.
    Map(BTreeMap<String, i64>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MapValue {
    Label(i64),
    Named(Vec<String>),
}

impl ClassFolders {
    /// Read a class map from a JSON file: either `{"<folder>": <label>, ...}` or ImageNet's
    /// `imagenet_class_index.json` form `{"<label>": ["<folder>", "<class name>"], ...}`.
    pub fn read_map(path: &Path) -> Result<Self> {
        let bytes = read_regular(path, MAX_CLASS_MAP_BYTES)?;
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "class map {}: {why}; expected {{\"<folder>\": <label>, ...}} or ImageNet's \
                 {{\"<label>\": [\"<folder>\", \"<name>\"], ...}}",
                path.display()
            ))
        };
        let raw: BTreeMap<String, MapValue> = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut map = BTreeMap::new();
        for (key, value) in raw {
            let (folder, label) = match value {
                MapValue::Label(label) => (key, label),
                MapValue::Named(names) => {
                    let label: i64 = key
                        .parse()
                        .map_err(|_| bad(format!("key \"{key}\" of a [folder, name] entry is not a label")))?;
                    let folder = names
                        .into_iter()
                        .next()
                        .ok_or_else(|| bad(format!("the entry of label {label} names no folder")))?;
                    (folder, label)
                }
            };
            check_label(label).map_err(|why| bad(format!("folder \"{folder}\": {why}")))?;
            if map.insert(folder.clone(), label).is_some() {
                return Err(bad(format!("folder \"{folder}\" appears twice")));
            }
        }
        if map.is_empty() {
            return Err(bad("it holds no classes".into()));
        }
        Ok(ClassFolders::Map(map))
    }
}

fn check_label(label: i64) -> std::result::Result<(), String> {
    if (0..=MAX_LABEL).contains(&label) {
        Ok(())
    } else {
        Err(format!("label {label} is outside 0..={MAX_LABEL}"))
    }
}

/// A folder name that is a label: ASCII digits only, no sign, no leading zero (but `0`).
fn folder_number(name: &OsStr) -> Option<i64> {
    let s = name.to_str()?;
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical
        .then(|| s.parse().ok())
        .flatten()
        .filter(|&l| check_label(l).is_ok())
}

/// The labels of one dataset's class folders, resolved by a [`ClassFolders`] rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderClasses {
    labels: BTreeMap<OsString, i64>,
    rule: &'static str,
}

impl FolderClasses {
    /// Resolve `rule` for the dataset whose images are `images` (relative paths). Every image
    /// must lie in a class folder, and every class folder must get a label.
    pub fn new(rule: &ClassFolders, images: &[RelPath]) -> Result<Self> {
        let mut folders: Vec<OsString> = Vec::new();
        for rel in images {
            let mut parts = rel.components();
            let (Some(folder), Some(_)) = (parts.next(), parts.next()) else {
                return Err(Error::InvalidInput(format!(
                    "{rel} lies in the dataset's root, not in a class folder; per-folder class labels \
                     need the layout <folder>/<class>/<image>"
                )));
            };
            folders.push(folder.to_os_string());
        }
        // Byte order, as Python sorts `str` names (code point order).
        folders.sort_by(|a, b| os_bytes(a).cmp(&os_bytes(b)));
        folders.dedup();
        if folders.is_empty() {
            return Err(Error::InvalidInput(
                "the dataset has no images, so no class folders".into(),
            ));
        }
        let numbered = folders.iter().all(|f| folder_number(f).is_some());
        let rule = match rule {
            ClassFolders::Auto if numbered => &ClassFolders::Numbered,
            ClassFolders::Auto => &ClassFolders::Sorted,
            r => r,
        };
        let (labels, name) = match rule {
            ClassFolders::Numbered => {
                let mut labels = BTreeMap::new();
                for f in &folders {
                    let label = folder_number(f).ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "class folder \"{}\" is not named by a label (0, 1, ...); rename it, or label \
                             the folders by sorted name or with a class map",
                            f.to_string_lossy()
                        ))
                    })?;
                    labels.insert(f.clone(), label);
                }
                (labels, "by number")
            }
            ClassFolders::Sorted => {
                let labels = folders.iter().enumerate().map(|(i, f)| (f.clone(), i as i64)).collect();
                (labels, "by sorted name")
            }
            ClassFolders::Map(map) => {
                let mut labels = BTreeMap::new();
                for f in &folders {
                    let label = f.to_str().and_then(|s| map.get(s)).ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "class folder \"{}\" is not in the class map ({} entries); add it to the map",
                            f.to_string_lossy(),
                            map.len()
                        ))
                    })?;
                    labels.insert(f.clone(), *label);
                }
                (labels, "from the class map")
            }
            ClassFolders::Auto => unreachable!("resolved above"),
        };
        Ok(Self { labels, rule: name })
    }

    /// The label of the image at `rel` (its top-level folder's).
    pub fn label_of(&self, rel: &RelPath) -> Result<i64> {
        rel.components()
            .next()
            .filter(|_| rel.len() > 1)
            .and_then(|f| self.labels.get(f))
            .copied()
            .ok_or_else(|| Error::InvalidInput(format!("{rel} is not in one of the dataset's class folders")))
    }

    /// `(folder, label)` for every class folder, sorted by folder name.
    pub fn folders(&self) -> impl Iterator<Item = (&OsStr, i64)> {
        self.labels.iter().map(|(f, &l)| (f.as_os_str(), l))
    }

    /// How the labels were given: `"by number"`, `"by sorted name"`, `"from the class map"`.
    pub fn rule(&self) -> &'static str {
        self.rule
    }

    /// One line for logs: the count, the rule and the first few `folder=label` pairs.
    pub fn describe(&self) -> String {
        const SHOWN: usize = 8;
        let mut pairs: Vec<String> = self
            .folders()
            .take(SHOWN)
            .map(|(f, l)| format!("{}={l}", f.to_string_lossy()))
            .collect();
        if self.labels.len() > SHOWN {
            pairs.push(format!("... ({} more)", self.labels.len() - SHOWN));
        }
        format!(
            "{} class folders {}: {}",
            self.labels.len(),
            self.rule,
            pairs.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(paths: &[&str]) -> Vec<RelPath> {
        paths.iter().map(|p| RelPath::new(p).unwrap()).collect()
    }

    #[test]
    fn numbered_folders_keep_their_numbers() {
        let images = rels(&["207/a.png", "3/b.png", "10/c/d.png"]);
        let c = FolderClasses::new(&ClassFolders::Auto, &images).unwrap();
        assert_eq!(c.rule(), "by number");
        let got: Vec<i64> = images.iter().map(|r| c.label_of(r).unwrap()).collect();
        assert_eq!(got, [207, 3, 10]);
        // The same folders by sorted name ("10" < "207" < "3").
        let s = FolderClasses::new(&ClassFolders::Sorted, &images).unwrap();
        let got: Vec<i64> = images.iter().map(|r| s.label_of(r).unwrap()).collect();
        assert_eq!(got, [1, 2, 0]);
    }

    #[test]
    fn mixed_names_are_sorted_and_leading_zeros_are_not_numbers() {
        let c = FolderClasses::new(&ClassFolders::Auto, &rels(&["07/a.png", "5/b.png"])).unwrap();
        assert_eq!(c.rule(), "by sorted name");
        let err = FolderClasses::new(&ClassFolders::Numbered, &rels(&["07/a.png"])).unwrap_err();
        assert!(err.to_string().contains("\"07\" is not named by a label"), "{err}");
    }

    #[test]
    fn images_outside_class_folders_are_refused() {
        let err = FolderClasses::new(&ClassFolders::Auto, &rels(&["cat/a.png", "b.png"])).unwrap_err();
        assert!(err.to_string().contains("b.png lies in the dataset's root"), "{err}");
    }

    #[test]
    fn maps_in_both_forms() {
        let dir = std::env::temp_dir().join(format!("boomerang-classmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flat = dir.join("flat.json");
        std::fs::write(&flat, r#"{"cat": 281, "dog": 207}"#).unwrap();
        let imagenet = dir.join("imagenet.json");
        std::fs::write(
            &imagenet,
            r#"{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}"#,
        )
        .unwrap();
        let images = rels(&["dog/a.png", "cat/b.png"]);
        let c = FolderClasses::new(&ClassFolders::read_map(&flat).unwrap(), &images).unwrap();
        assert_eq!(
            (c.label_of(&images[0]).unwrap(), c.label_of(&images[1]).unwrap()),
            (207, 281)
        );
        let map = ClassFolders::read_map(&imagenet).unwrap();
        let wnids = rels(&["n01443537/x.JPEG"]);
        assert_eq!(
            FolderClasses::new(&map, &wnids).unwrap().label_of(&wnids[0]).unwrap(),
            1
        );
        let err = FolderClasses::new(&map, &images).unwrap_err();
        assert!(
            err.to_string().contains("class folder \"cat\" is not in the class map"),
            "{err}"
        );
        for (name, text, want) in [
            ("neg.json", r#"{"cat": -1}"#, "label -1 is outside"),
            ("empty.json", "{}", "holds no classes"),
            ("list.json", "[1, 2]", "expected"),
            ("key.json", r#"{"x": ["cat"]}"#, "is not a label"),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            let err = ClassFolders::read_map(&p).unwrap_err();
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
