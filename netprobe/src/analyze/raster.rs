//! `--chart FILE.png`: the SVG chart of chart.rs rasterised by resvg, so that both formats are
//! one drawing. Its text needs a font: the system's are loaded (fontconfig's usual
//! directories), `sans-serif` mapped to one that is there. With no font at all the chart is
//! still drawn, without its labels, and the caller is told so.

use resvg::{tiny_skia, usvg};

/// Sans-serif families looked for first, in order; else any family with "Sans" in its name,
/// else the first family there is.
const PREFERRED_SANS: [&str; 4] = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"];

#[derive(Debug, thiserror::Error)]
pub enum RasterError {
    #[error("the chart's SVG: {0}")]
    Svg(#[from] usvg::Error),
    #[error("a {0}×{1} image cannot be allocated")]
    Size(u32, u32),
    #[error("encoding PNG: {0}")]
    Encode(String),
}

/// A rasterised chart.
pub struct Png {
    pub bytes: Vec<u8>,
    /// The font its labels are drawn in; `None`: no font on this system, no labels.
    pub font: Option<String>,
}

/// Draws `svg` at its own size (one pixel per SVG unit) into a PNG.
pub fn png(svg: &str) -> Result<Png, RasterError> {
    let mut options = usvg::Options::default();
    let font = {
        let fonts = options.fontdb_mut();
        fonts.load_system_fonts();
        let font = sans_serif(
            fonts
                .faces()
                .flat_map(|f| f.families.iter().map(|(n, _)| n)),
        );
        if let Some(name) = &font {
            fonts.set_sans_serif_family(name.as_str());
        }
        font
    };
    let tree = usvg::Tree::from_str(svg, &options)?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or(RasterError::Size(size.width(), size.height()))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    let bytes = pixmap
        .encode_png()
        .map_err(|e| RasterError::Encode(e.to_string()))?;
    Ok(Png { bytes, font })
}

/// The family to draw `sans-serif` text in, from the families the system has.
fn sans_serif<'a>(families: impl Iterator<Item = &'a String>) -> Option<String> {
    let families: Vec<&String> = families.collect();
    PREFERRED_SANS
        .iter()
        .find(|p| families.iter().any(|f| f == *p))
        .map(|p| p.to_string())
        .or_else(|| {
            families
                .iter()
                .find(|f| f.contains("Sans") && !f.contains("Mono"))
                .map(|f| f.to_string())
        })
        .or_else(|| families.first().map(|f| f.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sans_serif_prefers_the_known_faces_then_any_sans_then_anything() {
        let all = names(&["DejaVu Serif", "Liberation Sans", "DejaVu Sans"]);
        assert_eq!(sans_serif(all.iter()).as_deref(), Some("DejaVu Sans"));
        let other = names(&["Some Mono Sans Mono", "Fira Sans", "Gentium"]);
        assert_eq!(sans_serif(other.iter()).as_deref(), Some("Fira Sans"));
        let serif = names(&["Gentium"]);
        assert_eq!(sans_serif(serif.iter()).as_deref(), Some("Gentium"));
        assert_eq!(sans_serif(names(&[]).iter()), None);
    }
}
