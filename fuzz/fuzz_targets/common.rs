//! What the fuzz targets share: the repository's own pattern catalog, loaded once.

use std::path::Path;
use std::sync::OnceLock;

use prism_launcher::sources::catalog::{load_catalog, Catalog};

/// The catalog of `manifests/` (hello-pattern), so that launches and assignments that name a
/// pattern get past the lookup and into the validation.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        load_catalog(&dir).0
    })
}
