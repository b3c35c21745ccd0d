//! How the commands read their input images: the size policy of `--resize` and the image
//! limits (`BOOMERANG_MAX_PIXELS`). Listing inputs, naming outputs and checking them is the
//! library's ([`boomerang::apps::paths`]).

use boomerang::apps::dataset::SizePolicy;
use boomerang::image_io::ImageLimits;

use crate::error::CliError;

/// `--resize` as a size policy.
pub fn size_policy(resize: bool) -> SizePolicy {
    if resize {
        SizePolicy::Resize
    } else {
        SizePolicy::Skip
    }
}

/// The image limits, `BOOMERANG_MAX_PIXELS` applied.
pub fn image_limits() -> Result<ImageLimits, CliError> {
    Ok(ImageLimits::from_env()?)
}
